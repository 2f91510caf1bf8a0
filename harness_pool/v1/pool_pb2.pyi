from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkerEvent(_message.Message):
    __slots__ = ("hello", "ready", "start_failed", "finished", "preparing")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    START_FAILED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    PREPARING_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    ready: Ready
    start_failed: StartFailed
    finished: Finished
    preparing: Preparing
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., ready: _Optional[_Union[Ready, _Mapping]] = ..., start_failed: _Optional[_Union[StartFailed, _Mapping]] = ..., finished: _Optional[_Union[Finished, _Mapping]] = ..., preparing: _Optional[_Union[Preparing, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("prepare",)
    PREPARE_FIELD_NUMBER: _ClassVar[int]
    prepare: PrepareReport
    def __init__(self, prepare: _Optional[_Union[PrepareReport, _Mapping]] = ...) -> None: ...

class Preparing(_message.Message):
    __slots__ = ("artifacts",)
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    artifacts: int
    def __init__(self, artifacts: _Optional[int] = ...) -> None: ...

class PrepareReport(_message.Message):
    __slots__ = ("outcome", "pip_runs", "seconds", "artifacts", "artifacts_reused", "artifacts_fetched", "bytes_fetched", "artifact_rpcs", "evictions", "evicted_bytes", "env_key")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    PIP_RUNS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_REUSED_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FETCHED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FETCHED_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_RPCS_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    EVICTED_BYTES_FIELD_NUMBER: _ClassVar[int]
    ENV_KEY_FIELD_NUMBER: _ClassVar[int]
    outcome: str
    pip_runs: int
    seconds: float
    artifacts: int
    artifacts_reused: int
    artifacts_fetched: int
    bytes_fetched: int
    artifact_rpcs: int
    evictions: int
    evicted_bytes: int
    env_key: str
    def __init__(self, outcome: _Optional[str] = ..., pip_runs: _Optional[int] = ..., seconds: _Optional[float] = ..., artifacts: _Optional[int] = ..., artifacts_reused: _Optional[int] = ..., artifacts_fetched: _Optional[int] = ..., bytes_fetched: _Optional[int] = ..., artifact_rpcs: _Optional[int] = ..., evictions: _Optional[int] = ..., evicted_bytes: _Optional[int] = ..., env_key: _Optional[str] = ...) -> None: ...

class StartFailed(_message.Message):
    __slots__ = ("reason", "kind")
    REASON_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    reason: str
    kind: str
    def __init__(self, reason: _Optional[str] = ..., kind: _Optional[str] = ...) -> None: ...

class Finished(_message.Message):
    __slots__ = ("error",)
    ERROR_FIELD_NUMBER: _ClassVar[int]
    error: str
    def __init__(self, error: _Optional[str] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("runner_worker_id", "control_endpoint", "logging_endpoint", "artifact_endpoint", "provision_endpoint", "status_endpoint", "params", "provision_info", "deps", "interpreter")
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
    DEPS_FIELD_NUMBER: _ClassVar[int]
    INTERPRETER_FIELD_NUMBER: _ClassVar[int]
    runner_worker_id: str
    control_endpoint: str
    logging_endpoint: str
    artifact_endpoint: str
    provision_endpoint: str
    status_endpoint: str
    params: _containers.ScalarMap[str, str]
    provision_info: bytes
    deps: DepsConfig
    interpreter: str
    def __init__(self, runner_worker_id: _Optional[str] = ..., control_endpoint: _Optional[str] = ..., logging_endpoint: _Optional[str] = ..., artifact_endpoint: _Optional[str] = ..., provision_endpoint: _Optional[str] = ..., status_endpoint: _Optional[str] = ..., params: _Optional[_Mapping[str, str]] = ..., provision_info: _Optional[bytes] = ..., deps: _Optional[_Union[DepsConfig, _Mapping]] = ..., interpreter: _Optional[str] = ...) -> None: ...

class DepsConfig(_message.Message):
    __slots__ = ("cache_dir", "cache_size", "pip_timeout", "prepare_seconds", "call_timeout")
    CACHE_DIR_FIELD_NUMBER: _ClassVar[int]
    CACHE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PIP_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    PREPARE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CALL_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    cache_dir: str
    cache_size: int
    pip_timeout: float
    prepare_seconds: float
    call_timeout: float
    def __init__(self, cache_dir: _Optional[str] = ..., cache_size: _Optional[int] = ..., pip_timeout: _Optional[float] = ..., prepare_seconds: _Optional[float] = ..., call_timeout: _Optional[float] = ...) -> None: ...

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
    __slots__ = ("address", "serving", "flavor", "target_idle", "workers", "assignments", "draining", "env_cache")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    FLAVOR_FIELD_NUMBER: _ClassVar[int]
    TARGET_IDLE_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    ENV_CACHE_FIELD_NUMBER: _ClassVar[int]
    address: str
    serving: bool
    flavor: str
    target_idle: int
    workers: _containers.RepeatedCompositeFieldContainer[WorkerStatus]
    assignments: _containers.RepeatedCompositeFieldContainer[AssignmentRecord]
    draining: bool
    env_cache: EnvCacheStatus
    def __init__(self, address: _Optional[str] = ..., serving: bool = ..., flavor: _Optional[str] = ..., target_idle: _Optional[int] = ..., workers: _Optional[_Iterable[_Union[WorkerStatus, _Mapping]]] = ..., assignments: _Optional[_Iterable[_Union[AssignmentRecord, _Mapping]]] = ..., draining: bool = ..., env_cache: _Optional[_Union[EnvCacheStatus, _Mapping]] = ...) -> None: ...

class EnvCacheStatus(_message.Message):
    __slots__ = ("dir", "limit_bytes", "bytes_in_use", "environments", "blobs", "hits", "waits", "builds", "pip_runs", "evictions", "artifacts_fetched", "artifacts_reused", "bytes_fetched", "failures", "interpreters")
    DIR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    BYTES_IN_USE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENTS_FIELD_NUMBER: _ClassVar[int]
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    WAITS_FIELD_NUMBER: _ClassVar[int]
    BUILDS_FIELD_NUMBER: _ClassVar[int]
    PIP_RUNS_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FETCHED_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_REUSED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FETCHED_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    INTERPRETERS_FIELD_NUMBER: _ClassVar[int]
    dir: str
    limit_bytes: int
    bytes_in_use: int
    environments: int
    blobs: int
    hits: int
    waits: int
    builds: int
    pip_runs: int
    evictions: int
    artifacts_fetched: int
    artifacts_reused: int
    bytes_fetched: int
    failures: int
    interpreters: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, dir: _Optional[str] = ..., limit_bytes: _Optional[int] = ..., bytes_in_use: _Optional[int] = ..., environments: _Optional[int] = ..., blobs: _Optional[int] = ..., hits: _Optional[int] = ..., waits: _Optional[int] = ..., builds: _Optional[int] = ..., pip_runs: _Optional[int] = ..., evictions: _Optional[int] = ..., artifacts_fetched: _Optional[int] = ..., artifacts_reused: _Optional[int] = ..., bytes_fetched: _Optional[int] = ..., failures: _Optional[int] = ..., interpreters: _Optional[_Iterable[str]] = ...) -> None: ...

class RecycleWorkerRequest(_message.Message):
    __slots__ = ("pool_id",)
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    def __init__(self, pool_id: _Optional[str] = ...) -> None: ...

class RecycleWorkerResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
