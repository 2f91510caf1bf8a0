from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkerEvent(_message.Message):
    __slots__ = ("hello", "ready", "start_failed", "finished")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    START_FAILED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    ready: Ready
    start_failed: StartFailed
    finished: Finished
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., ready: _Optional[_Union[Ready, _Mapping]] = ..., start_failed: _Optional[_Union[StartFailed, _Mapping]] = ..., finished: _Optional[_Union[Finished, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("pid", "flavor", "warm_seconds", "beam_version", "token")
    PID_FIELD_NUMBER: _ClassVar[int]
    FLAVOR_FIELD_NUMBER: _ClassVar[int]
    WARM_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BEAM_VERSION_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    pid: int
    flavor: str
    warm_seconds: float
    beam_version: str
    token: str
    def __init__(self, pid: _Optional[int] = ..., flavor: _Optional[str] = ..., warm_seconds: _Optional[float] = ..., beam_version: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class Ready(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StartFailed(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Finished(_message.Message):
    __slots__ = ("error",)
    ERROR_FIELD_NUMBER: _ClassVar[int]
    error: str
    def __init__(self, error: _Optional[str] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("runner_worker_id", "control_endpoint", "logging_endpoint", "artifact_endpoint", "provision_endpoint", "status_endpoint", "params", "provision_info")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUNNER_WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTROL_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    LOGGING_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    PROVISION_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    STATUS_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    PROVISION_INFO_FIELD_NUMBER: _ClassVar[int]
    runner_worker_id: str
    control_endpoint: str
    logging_endpoint: str
    artifact_endpoint: str
    provision_endpoint: str
    status_endpoint: str
    params: _containers.ScalarMap[str, str]
    provision_info: bytes
    def __init__(self, runner_worker_id: _Optional[str] = ..., control_endpoint: _Optional[str] = ..., logging_endpoint: _Optional[str] = ..., artifact_endpoint: _Optional[str] = ..., provision_endpoint: _Optional[str] = ..., status_endpoint: _Optional[str] = ..., params: _Optional[_Mapping[str, str]] = ..., provision_info: _Optional[bytes] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkerStatus(_message.Message):
    __slots__ = ("pool_id", "kind", "state", "runner_worker_id", "pid", "uptime_seconds", "assignments_served", "seconds_in_state", "flavor", "connected", "bytes_forwarded", "last_error", "end_reason", "slot")
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RUNNER_WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_SERVED_FIELD_NUMBER: _ClassVar[int]
    SECONDS_IN_STATE_FIELD_NUMBER: _ClassVar[int]
    FLAVOR_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FORWARDED_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    kind: str
    state: str
    runner_worker_id: str
    pid: int
    uptime_seconds: float
    assignments_served: int
    seconds_in_state: float
    flavor: str
    connected: bool
    bytes_forwarded: int
    last_error: str
    end_reason: str
    slot: int
    def __init__(self, pool_id: _Optional[str] = ..., kind: _Optional[str] = ..., state: _Optional[str] = ..., runner_worker_id: _Optional[str] = ..., pid: _Optional[int] = ..., uptime_seconds: _Optional[float] = ..., assignments_served: _Optional[int] = ..., seconds_in_state: _Optional[float] = ..., flavor: _Optional[str] = ..., connected: bool = ..., bytes_forwarded: _Optional[int] = ..., last_error: _Optional[str] = ..., end_reason: _Optional[str] = ..., slot: _Optional[int] = ...) -> None: ...

class AssignmentRecord(_message.Message):
    __slots__ = ("pool_id", "runner_worker_id", "pid", "time_to_ready_seconds", "started_at_unix", "ended_at_unix", "outcome", "detail")
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    RUNNER_WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_READY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    runner_worker_id: str
    pid: int
    time_to_ready_seconds: float
    started_at_unix: float
    ended_at_unix: float
    outcome: str
    detail: str
    def __init__(self, pool_id: _Optional[str] = ..., runner_worker_id: _Optional[str] = ..., pid: _Optional[int] = ..., time_to_ready_seconds: _Optional[float] = ..., started_at_unix: _Optional[float] = ..., ended_at_unix: _Optional[float] = ..., outcome: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class PoolStatus(_message.Message):
    __slots__ = ("address", "serving", "flavor", "target_idle", "workers", "assignments", "draining")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    FLAVOR_FIELD_NUMBER: _ClassVar[int]
    TARGET_IDLE_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    address: str
    serving: bool
    flavor: str
    target_idle: int
    workers: _containers.RepeatedCompositeFieldContainer[WorkerStatus]
    assignments: _containers.RepeatedCompositeFieldContainer[AssignmentRecord]
    draining: bool
    def __init__(self, address: _Optional[str] = ..., serving: bool = ..., flavor: _Optional[str] = ..., target_idle: _Optional[int] = ..., workers: _Optional[_Iterable[_Union[WorkerStatus, _Mapping]]] = ..., assignments: _Optional[_Iterable[_Union[AssignmentRecord, _Mapping]]] = ..., draining: bool = ...) -> None: ...

class RecycleWorkerRequest(_message.Message):
    __slots__ = ("pool_id",)
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    def __init__(self, pool_id: _Optional[str] = ...) -> None: ...

class RecycleWorkerResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
