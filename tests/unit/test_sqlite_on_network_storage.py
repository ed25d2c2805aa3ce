"""A SQLite MLflow store on a network file system (where its locking is unreliable) is named in one warning line."""

import logging

from omegaconf import OmegaConf

from helpers import seed_store
from runner.system.environment import network_filesystem

MOUNTS = """/dev/sda1 / ext4 rw,relatime 0 0
server:/export /shared nfs4 rw,vers=4.2 0 0
/dev/sdb1 /shared/local ext4 rw 0 0
mds@tcp:/lfs /lustre lustre rw 0 0
gluster:/vol /mnt/my\\040team fuse.glusterfs rw 0 0
tmpfs /tmp tmpfs rw 0 0
"""


def test_the_longest_mount_point_decides():
    assert network_filesystem("/shared/team/mlflow.db", MOUNTS) == "nfs4"
    assert network_filesystem("/shared/local/mlflow.db", MOUNTS) is None  # a local disk mounted inside the share
    assert network_filesystem("/lustre/p/mlflow.db", MOUNTS) == "lustre"
    assert network_filesystem("/mnt/my team/mlflow.db", MOUNTS) == "fuse.glusterfs"
    assert network_filesystem("/sharedother/mlflow.db", MOUNTS) is None  # a prefix of the name is not the mount
    assert network_filesystem("/home/me/mlflow.db", MOUNTS) is None


def test_a_tracker_on_a_network_share_warns_once_naming_the_fix(tmp_path, monkeypatch, caplog):
    import runner.tracking as tracking

    db = seed_store(tmp_path)
    monkeypatch.setattr(tracking, "network_filesystem", lambda path: "nfs4")
    cfg = OmegaConf.create({"uri": f"sqlite:///{db}", "experiment": "quant-runner", "upload_artifacts": False})
    with caplog.at_level(logging.WARNING, logger="runner.tracking"):
        tracking.Tracker(cfg)
        tracking.Tracker(cfg)
    lines = [r.getMessage() for r in caplog.records if "network file system" in r.getMessage()]
    assert len(lines) == 1 and "(nfs4)" in lines[0] and "tracking=server" in lines[0] and "\n" not in lines[0]
