"""Problems found in a job before it runs.

Each problem names the field, the offending value, a machine-readable code and a
sentence a person can act on. A rejection always carries *every* problem found,
so a user fixes them in one round instead of one per submission.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class ProblemCode(StrEnum):
    PATH_NOT_FOUND = "PATH_NOT_FOUND"
    ACCESS_DENIED = "ACCESS_DENIED"
    NOT_A_FILE = "NOT_A_FILE"
    NOT_A_DIRECTORY = "NOT_A_DIRECTORY"
    NOT_A_MODEL = "NOT_A_MODEL"
    NOT_READABLE = "NOT_READABLE"
    INVALID_PATH = "INVALID_PATH"
    WRONG_FILE_TYPE = "WRONG_FILE_TYPE"
    OUTPUT_EXISTS = "OUTPUT_EXISTS"
    READ_ONLY = "READ_ONLY"
    CONFIG_INVALID = "CONFIG_INVALID"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    FRAMES_INVALID = "FRAMES_INVALID"
    INVALID_VALUE = "INVALID_VALUE"
    CONFLICT = "CONFLICT"
    MISSING_FIELD = "MISSING_FIELD"
    UNKNOWN_FIELD = "UNKNOWN_FIELD"
    INVALID_TYPE = "INVALID_TYPE"
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    #: Not a SLEAP labels file sleap-io can read (corrupt, or another format).
    LABELS_INVALID = "LABELS_INVALID"
    #: A video a labels file references is not on this worker (field ``….videos[i]``).
    VIDEO_NOT_FOUND = "VIDEO_NOT_FOUND"


#: Codes the path-correction flow can fix by letting the user pick another path.
PATH_CODES = frozenset(
    {
        ProblemCode.PATH_NOT_FOUND,
        ProblemCode.ACCESS_DENIED,
        ProblemCode.NOT_A_FILE,
        ProblemCode.NOT_A_DIRECTORY,
        ProblemCode.NOT_A_MODEL,
        ProblemCode.WRONG_FILE_TYPE,
    }
)


class Problem(BaseModel):
    """One thing wrong with a job spec."""

    model_config = ConfigDict(frozen=True)

    field: str
    value: str | None
    code: ProblemCode
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class JobRejected(Exception):
    """A job that must not run; ``problems`` lists every reason.

    ``job_id`` is set once the rejection has been recorded under that id (a worker's
    job store keeps rejected jobs too), and is None for a check that recorded nothing.
    """

    def __init__(self, problems: list[Problem], job_id: str | None = None) -> None:
        if not problems:
            raise ValueError("JobRejected needs at least one problem")
        self.problems = problems
        self.job_id = job_id
        super().__init__("; ".join(str(p) for p in problems))
