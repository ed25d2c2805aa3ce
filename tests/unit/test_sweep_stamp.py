"""Which commands a finished sweep's stamp may answer, and what its key notices before anything is composed."""

from runner import sweep_stamp


def test_only_plain_multirun_overrides_are_stampable():
    assert sweep_stamp._stampable(["-m", "format=fp32,fp16"])
    assert sweep_stamp._stampable(["--multirun", "experiment=cpu_default", "deployment=cpu_local_1user"])
    assert not sweep_stamp._stampable(["format=fp32"])  # a single job prints its own run, always anew
    assert not sweep_stamp._stampable(["-m", "format=fp32", "--cfg", "job"])  # Hydra's own modes
    assert not sweep_stamp._stampable(["-m", "format=fp32", "resume=false"])  # a forced re-run
    assert not sweep_stamp._stampable(["-m", "format=fp32", "+resume=False"])


def test_the_key_changes_with_the_arguments_the_environment_and_the_folder(tmp_path, monkeypatch):
    argv = ["-m", "format=fp32,fp16"]
    monkeypatch.chdir(tmp_path)
    key = sweep_stamp._key(argv)
    assert sweep_stamp._key(list(argv)) == key
    assert sweep_stamp._key(["-m", "format=fp16,fp32"]) != key
    monkeypatch.setenv("QRUN_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert sweep_stamp._key(argv) != key
    monkeypatch.delenv("QRUN_CACHE_DIR")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert sweep_stamp._key(argv) != key


def test_a_server_store_a_parallel_launcher_or_a_hub_model_is_never_stamped(tmp_path, monkeypatch):
    from runner.system import inputs

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlflow.db").write_bytes(b"")
    argv = ["-m", "format=fp32"]
    basic = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    assert sweep_stamp.write(argv, basic, "sqlite:///mlflow.db", "r", "text") is None  # not launched: no key
    assert not sweep_stamp.replay(argv)
    assert sweep_stamp.write(argv, basic, "http://127.0.0.1:5000", "r", "text") is None
    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert sweep_stamp.write(argv, joblib, "sqlite:///mlflow.db", "r", "text") is None
    monkeypatch.setattr(inputs, "UNVERIFIABLE", ["the hub model org/name"])
    assert sweep_stamp.write(argv, basic, "sqlite:///mlflow.db", "r", "text") is None
    monkeypatch.setattr(inputs, "UNVERIFIABLE", [])
    assert sweep_stamp.write(argv, basic, "sqlite:///mlflow.db", "r", "text") is not None


def test_the_key_is_the_launched_commands_not_what_libraries_set_while_it_ran(tmp_path, monkeypatch, capsys):
    """gptqmodel's tokenizer sets HF_HOME and CUDA_DEVICE_ORDER in the process as it loads: the stamp written at the
    sweep's end must still answer the same command launched again."""
    from runner.system import inputs

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(inputs, "UNVERIFIABLE", [])
    monkeypatch.setattr(inputs, "READ", {})
    monkeypatch.delenv("HF_HOME", raising=False)
    (tmp_path / "mlflow.db").write_bytes(b"")
    argv = ["-m", "format=fp32,fp16"]
    basic = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    assert not sweep_stamp.replay(argv)
    monkeypatch.setenv("HF_HOME", "/tmp/set-by-a-library")
    assert sweep_stamp.write(argv, basic, "sqlite:///mlflow.db", "run-1", "the table") is not None
    monkeypatch.delenv("HF_HOME")
    assert sweep_stamp.replay(argv)
    assert "the table" in capsys.readouterr().out


def test_a_recorded_file_that_changed_or_went_is_noticed(tmp_path):
    from runner.system import inputs

    f = tmp_path / "weights.bin"
    f.write_bytes(b"x" * 10)
    recorded = {str(f): inputs.state(f)}
    assert inputs.first_change(recorded) is None
    f.write_bytes(b"y" * 10)
    assert inputs.first_change(recorded) == str(f)
    f.unlink()
    assert inputs.first_change({str(f): [10, 0, 0]}) == str(f)
