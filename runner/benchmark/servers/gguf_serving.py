"""What the two GGUF servers (llama.cpp's own llama-server, llama-cpp-python's llama_cpp.server) share: the file
they load, the name they serve it under, and the address, all taken from the artifact and the load's host:port."""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runner.benchmark.servers.process import ServerSpec

if TYPE_CHECKING:
    from runner.formats.artifacts import Artifact


@dataclass(frozen=True)
class GgufServing:
    artifact: "Artifact"
    host: str
    port: int

    @property
    def gguf(self) -> Path:
        """The artifact's one GGUF file."""
        return self.artifact.path / self.artifact.manifest["weight_files"][0]

    @property
    def alias(self) -> str:
        """The format preset's name: the server's model alias, and the `model` field of every request."""
        return self.artifact.manifest["format"]

    def spec(self, name: str, cmd, health_path: str, **more) -> ServerSpec:
        """The server's spec at this address serving this alias; `more`: its other ServerSpec fields."""
        return ServerSpec(
            name=name, cmd=cmd, host=self.host, port=self.port, health_path=health_path, model=self.alias, **more
        )
