"""The resources a SLURM job asks for (``#SBATCH`` options): a pure model, no I/O.

Shared by the worker's ``[slurm]`` settings
(:class:`~sleap_rtc.engine.backends.slurm.settings.SlurmSettings` extends it) and
the pipeline's job files, whose ``slurm`` resources become the
``#SBATCH`` lines of each stage's script. It is SLURM's vocabulary (partition,
qos, gres), so it lives with the SLURM backend; another scheduler brings its own.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

_TIME = re.compile(r"^(\d+-)?\d{1,3}(:\d{2}){0,2}$")
_MEM = re.compile(r"^\d+[KMGT]?$")
_FORMATS = {
    "time": (_TIME, "1-00:00:00, 02:00:00, 30:00 or 30"),
    "mem": (_MEM, "16G, 4000M or 4000 (MB)"),
}


def single_line(value: str, what: str) -> str:
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError(f"{what} must be a single line")
    return value


class Resources(BaseModel):
    """SLURM resources; unset fields are left to the cluster's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = Field(default=None, description="D-HH:MM:SS, HH:MM:SS, MM:SS or MM")
    mem: str | None = Field(default=None, description="e.g. 16G")
    cpus: int | None = Field(default=None, ge=1, le=4096)
    gpus: int | None = Field(default=None, ge=0, le=64)
    gres: str | None = None
    constraint: str | None = None
    #: More ``#SBATCH`` lines, each an option such as ``--exclusive``.
    extra: list[str] = Field(default_factory=list, max_length=64)

    def directives(self) -> list[str]:
        """The ``#SBATCH`` options these resources ask for (without ``#SBATCH``)."""
        lines = []
        for option, value in (
            ("partition", self.partition),
            ("account", self.account),
            ("qos", self.qos),
            ("time", self.time),
            ("mem", self.mem),
            ("cpus-per-task", self.cpus),
            ("constraint", self.constraint),
            ("gres", self.gres),
        ):
            if value is not None:
                lines.append(f"--{option}={value}")
        if self.gpus:
            lines.append(f"--gpus={self.gpus}")
        return [*lines, *self.extra]

    @field_validator("partition", "account", "qos", "gres", "constraint")
    @classmethod
    def _single_word(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c.isspace() for c in value)):
            raise ValueError("must be one word without spaces")
        return value

    @field_validator("time", "mem")
    @classmethod
    def _format(cls, value: str | None, info: ValidationInfo) -> str | None:
        pattern, example = _FORMATS[str(info.field_name)]
        if value is not None and not pattern.match(value):
            raise ValueError(f"{info.field_name} must look like {example}")
        return value

    @field_validator("extra")
    @classmethod
    def _extra(cls, value: list[str]) -> list[str]:
        for item in value:
            single_line(item, "an extra SBATCH line")
            if not item.startswith("--"):
                raise ValueError(f"extra SBATCH lines are options like --exclusive, got {item!r}")
        return value

    def over(self, base: Resources) -> Resources:
        """These resources, with ``base`` filling what is unset."""
        merged = base.model_dump()
        for key, value in self.model_dump().items():
            if key == "extra":
                merged[key] = [*base.extra, *value]
            elif value is not None:
                merged[key] = value
        return Resources(**merged)
