"""Runs the Pulumi program under Pulumi's unit-test mocks and records it.

`build` registers the whole stack in-process with `pulumi.runtime.set_mocks`,
records every resource the mock engine receives (type token, name, inputs) and
every resource's `depends_on` through a stack transformation, and resolves the
stack outputs. A subclass of the SDK's mock monitor also records each
registration request as the engine would receive it: URN, parent, the URNs it
depends on (per input too) and `protect`. Each call starts from fresh runtime
state and restores it after.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infra.config import PROJECT_NAME, StackConfig, load_config  # noqa: E402
from infra.stack import build_stack  # noqa: E402

GCP_PROJECT = "test-gcp-project"
PROJECT_NUMBER = "123456789012"
REGION = "us-central1"
PUBSUB_AGENT = f"service-{PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"

# Distinctive values, so that a leak is found by searching for them.
SECRET_VALUE = "sekrit-2f7c9d41-credential"
TOKEN_VALUE = "tok3n-8e1b5a90-credential"
SA_USERNAME = "forwarder.a1b2c3.mp-service-account"

MAIN_PY = 'def forward(request):\n    return "", 204\n'

SECRET_VERSION_TYPE = "gcp:secretmanager/secretVersion:SecretVersion"

ResourceKey = tuple[str, str]


def project_key(name: str) -> str:
    """Return the full config key of a project-namespaced key."""
    return f"{PROJECT_NAME}:{name}"


def base_config(**overrides: str | None) -> dict[str, str]:
    """Return a valid service-account configuration as full config keys.

    Overrides use bare project key names or `gcp:` keys, and None removes a key.
    """
    values: dict[str, str | None] = {
        "gcp:project": GCP_PROJECT,
        "gcp:region": REGION,
        "mixpanelProjectId": "3141592",
        "mixpanelServiceAccountUsername": SA_USERNAME,
        "mixpanelServiceAccountSecret": SECRET_VALUE,
    }
    values.update(overrides)
    return {
        (key if ":" in key else project_key(key)): value
        for key, value in values.items()
        if value is not None
    }


def token_config(**overrides: str | None) -> dict[str, str]:
    """Return a valid project-token configuration as full config keys."""
    return base_config(
        mixpanelServiceAccountUsername=None,
        mixpanelServiceAccountSecret=None,
        mixpanelProjectToken=TOKEN_VALUE,
        **overrides,
    )


CREDENTIAL_KEYS = (
    project_key("mixpanelServiceAccountSecret"),
    project_key("mixpanelProjectToken"),
)


@dataclass
class Registration:
    """One resource as the mock engine saw it."""

    type_: str
    name: str
    inputs: dict


class SecretVersions:
    """The versions of each secret, numbered as Secret Manager numbers them.

    Passing one instance to several `build` calls stands for one project over
    several `pulumi up` runs: data equal to the latest version's keeps that
    version, and new data adds the next one.
    """

    def __init__(self) -> None:
        self.data_by_secret: dict[str, list[str]] = {}

    def version_for(self, secret: str, data: str) -> str:
        """Return the version number that contains `data`, adding one if needed."""
        versions = self.data_by_secret.setdefault(secret, [])
        if not versions or versions[-1] != data:
            versions.append(data)
        return str(len(versions))


class RecordingMocks(pulumi.runtime.Mocks):
    """Returns plausible GCP outputs to the mock engine and records each resource."""

    def __init__(self, secret_versions: SecretVersions | None = None) -> None:
        self.registrations: list[Registration] = []
        self.calls: list[str] = []
        self.secret_versions = secret_versions or SecretVersions()

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.registrations.append(Registration(args.typ, args.name, args.inputs))
        inputs = dict(args.inputs)
        resource_id, extra = _outputs_for(args.typ, args.name, inputs)
        if args.typ == SECRET_VERSION_TYPE:
            number = self.secret_versions.version_for(
                inputs["secret"], _unwrap(inputs["secretData"])
            )
            resource_id = f"{inputs['secret']}/versions/{number}"
            extra = {"name": resource_id, "version": number}
        return resource_id, {**inputs, **extra}

    def call(self, args: pulumi.runtime.MockCallArgs):
        self.calls.append(args.token)
        if args.token == "gcp:organizations/getProject:getProject":
            return {
                "projectId": GCP_PROJECT,
                "number": PROJECT_NUMBER,
                "name": GCP_PROJECT,
            }
        return {}


def _unwrap(value):
    """Return a mock input without its secret marker, if it has one."""
    return rpc.unwrap_rpc_secret(value) if rpc.is_rpc_secret(value) else value


def _outputs_for(type_: str, name: str, inputs: dict) -> tuple[str, dict]:
    """Return the id and the computed outputs GCP would give a resource."""
    project = inputs.get("project", GCP_PROJECT)
    location = inputs.get("location", REGION)

    if type_ == "gcp:pubsub/topic:Topic":
        return f"projects/{project}/topics/{inputs['name']}", {}
    if type_ == "gcp:pubsub/subscription:Subscription":
        return f"projects/{project}/subscriptions/{inputs['name']}", {}
    if type_ == "gcp:serviceaccount/account:Account":
        email = f"{inputs['accountId']}@{project}.iam.gserviceaccount.com"
        full_name = f"projects/{project}/serviceAccounts/{email}"
        return full_name, {
            "email": email,
            "name": full_name,
            "member": f"serviceAccount:{email}",
            "uniqueId": "104857600000000000001",
        }
    if type_ == "gcp:projects/serviceIdentity:ServiceIdentity":
        return f"projects/{project}/services/{inputs['service']}", {
            "email": PUBSUB_AGENT,
            "member": f"serviceAccount:{PUBSUB_AGENT}",
        }
    if type_ == "gcp:secretmanager/secret:Secret":
        secret_id = inputs["secretId"]
        return f"projects/{project}/secrets/{secret_id}", {
            "name": f"projects/{PROJECT_NUMBER}/secrets/{secret_id}",
        }
    if type_ == "gcp:storage/bucket:Bucket":
        return inputs["name"], {"url": f"gs://{inputs['name']}"}
    if type_ == "gcp:storage/bucketObject:BucketObject":
        return f"{inputs['bucket']}-{inputs['name']}", {"generation": 1}
    if type_ == "gcp:artifactregistry/repository:Repository":
        repository = inputs["repositoryId"]
        return (
            f"projects/{project}/locations/{location}/repositories/{repository}",
            {"name": repository},
        )
    if type_ == "gcp:cloudfunctionsv2/function:Function":
        function_name = inputs["name"]
        service_config = dict(inputs.get("serviceConfig", {}))
        service_config["uri"] = f"https://{function_name}-x7k2p9q4ra-uc.a.run.app"
        service_config["service"] = (
            f"projects/{project}/locations/{location}/services/{function_name}"
        )
        return (
            f"projects/{project}/locations/{location}/functions/{function_name}",
            {
                "serviceConfig": service_config,
                "url": f"https://{location}-{project}.cloudfunctions.net/{function_name}",
                "state": "ACTIVE",
            },
        )
    if type_ in _MONITORING_COLLECTIONS:
        # Cloud Monitoring generates the id, so a digest of the logical name
        # is used in its place.
        collection = _MONITORING_COLLECTIONS[type_]
        generated = hashlib.sha256(name.encode()).hexdigest()[:12]
        full_name = f"projects/{PROJECT_NUMBER}/{collection}/{generated}"
        return full_name, {"name": full_name}
    return f"{name}-id", {}


_MONITORING_COLLECTIONS = {
    "gcp:monitoring/dashboard:Dashboard": "dashboards",
    "gcp:monitoring/notificationChannel:NotificationChannel": "notificationChannels",
    "gcp:monitoring/alertPolicy:AlertPolicy": "alertPolicies",
}


class DependencyRecorder:
    """A stack transformation that records each resource's `depends_on`.

    The mock engine does not receive resource options, but a transformation
    receives the options of every resource before it is registered. It returns
    None, so it changes nothing.
    """

    def __init__(self) -> None:
        self.keys_by_object: dict[int, ResourceKey] = {}
        self.dependencies: dict[ResourceKey, list[ResourceKey]] = {}
        self.props: dict[ResourceKey, dict] = {}
        self.parents: dict[ResourceKey, ResourceKey | None] = {}

    def __call__(self, args: pulumi.ResourceTransformationArgs) -> None:
        key = (args.type_, args.name)
        self.keys_by_object[id(args.resource)] = key
        self.props[key] = dict(args.props or {})
        parent = args.opts.parent if args.opts else None
        self.parents[key] = self.keys_by_object.get(id(parent)) if parent else None
        depends_on = args.opts.depends_on if args.opts else None
        if depends_on is None:
            depends_on = []
        elif not isinstance(depends_on, list | tuple):
            depends_on = [depends_on]
        self.dependencies[key] = [
            self.keys_by_object.get(id(resource), ("?", repr(resource)))
            for resource in depends_on
        ]
        return None


@dataclass
class Node:
    """One registration request as the engine receives it, and its outputs.

    `dependencies` lists the URNs the resource waits for, from `depends_on`
    and from its inputs alike. `property_dependencies` lists them per input.
    `parent` is "" for a resource without a parent.
    """

    urn: str
    type_: str
    name: str
    parent: str
    dependencies: list[str]
    property_dependencies: dict[str, list[str]]
    protect: bool
    outputs: dict


class RecordingMonitor(MockMonitor):
    """The SDK's mock monitor, also recording each registration request."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.nodes: dict[ResourceKey, Node] = {}

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        registered = self.resources.get(response.urn)
        self.nodes[(request.type, request.name)] = Node(
            urn=response.urn,
            type_=request.type,
            name=request.name,
            parent=request.parent,
            dependencies=list(request.dependencies),
            property_dependencies={
                key: list(value.urns)
                for key, value in request.propertyDependencies.items()
            },
            protect=request.HasField("protect") and request.protect,
            outputs=dict(registered.state) if registered else {},
        )
        return response


class EngineLog(logging.Handler):
    """Collects the messages that the program logs through `pulumi.log`."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.warnings: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno == logging.WARNING:
            self.warnings.append(record.getMessage())


def engine_logger(log: EngineLog) -> logging.Logger:
    """Return a logger for the mock engine that sends its records to `log`."""
    logger = logging.getLogger(f"{__name__}.engine")
    logger.handlers = [log]
    logger.propagate = False
    return logger


@dataclass
class BuiltStack:
    """Everything one run of the program registered and returned."""

    registrations: list[Registration]
    dependencies: dict[ResourceKey, list[ResourceKey]]
    props: dict[ResourceKey, dict]
    parents: dict[ResourceKey, ResourceKey | None]
    outputs: dict[str, object]
    secret_outputs: set[str] = field(default_factory=set)
    config: StackConfig | None = None
    nodes: dict[ResourceKey, Node] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def key_of(self, urn: str) -> ResourceKey:
        """Return the (type, name) of the resource with this URN."""
        for key, node in self.nodes.items():
            if node.urn == urn:
                return key
        raise AssertionError(f"no resource has the URN {urn}")

    def upstream(
        self, key: ResourceKey, avoiding: Iterable[ResourceKey] = ()
    ) -> set[ResourceKey]:
        """Return every resource that `key` depends on, directly or transitively.

        A resource depends on its parent, on what it lists in `depends_on` and
        on the resources whose outputs its inputs use. The walk does not go
        through the resources in `avoiding`.
        """
        avoided = set(avoiding)
        found: set[ResourceKey] = set()
        pending = [key]
        while pending:
            node = self.nodes[pending.pop()]
            urns = list(node.dependencies)
            if node.parent:
                urns.append(node.parent)
            for urn in urns:
                upstream_key = self.key_of(urn)
                if upstream_key in avoided or upstream_key in found:
                    continue
                found.add(upstream_key)
                pending.append(upstream_key)
        return found

    def flat_inputs(self) -> dict[ResourceKey, dict[str, str]]:
        """Return each resource's inputs as {dotted path: value text}.

        Secrets are unwrapped and assets shown by their path, so two builds
        can be compared input by input.
        """
        return {
            (registration.type_, registration.name): _flatten(registration.inputs)
            for registration in self.registrations
        }

    def of_type(self, type_: str) -> list[Registration]:
        """Return the registrations of one type token."""
        return [r for r in self.registrations if r.type_ == type_]

    def one(self, type_: str, name: str | None = None) -> Registration:
        """Return the single registration of a type (and logical name)."""
        matches = [
            r for r in self.of_type(type_) if name is None or r.name.endswith(name)
        ]
        if len(matches) != 1:
            found = [r.name for r in self.of_type(type_)]
            raise AssertionError(
                f"expected one {type_} named *{name or ''}, found {found}"
            )
        return matches[0]

    def depends_on(self, type_: str, name: str) -> list[ResourceKey]:
        """Return the (type, name) of each resource in a resource's depends_on."""
        return self.dependencies[(type_, name)]

    def api_dependencies(self, type_: str, name: str) -> set[str]:
        """Return the APIs whose enablement a resource depends on."""
        apis = set()
        for dependency in self.depends_on(type_, name):
            if dependency[0] == "gcp:projects/service:Service":
                apis.add(self.props[dependency]["service"])
        return apis

    def physical_names(self) -> set[str]:
        """Return the GCP ids the program chose (names, account and secret ids)."""
        names = set()
        for registration in self.registrations:
            for key in ("name", "accountId", "secretId", "repositoryId"):
                value = registration.inputs.get(key)
                if (
                    isinstance(value, str)
                    and registration.type_ != "pulumi:providers:gcp"
                ):
                    names.add(value)
        return names

    def serialized_inputs(self, skip: Iterable[tuple[str, str]] = ()) -> str:
        """Return every recorded name and input as one JSON text.

        `skip` lists (type token, input key) pairs to leave out.
        """
        skipped = set(skip)
        documents = []
        for registration in self.registrations:
            inputs = {
                key: _unwrap(value)
                for key, value in registration.inputs.items()
                if (registration.type_, key) not in skipped
            }
            documents.append(
                {"type": registration.type_, "name": registration.name, **inputs}
            )
        return json.dumps(documents, default=repr, sort_keys=True)


def _flatten(value, path: str = "") -> dict[str, str]:
    """Return the leaves of an input value as {dotted path: text}."""
    value = _unwrap(value)
    if isinstance(value, pulumi.AssetArchive):
        value = value.assets
    if isinstance(value, Mapping | list | tuple) and not value:
        return {path: json.dumps(value)}
    if isinstance(value, Mapping):
        leaves: dict[str, str] = {}
        for key, item in value.items():
            leaves.update(_flatten(item, f"{path}.{key}" if path else str(key)))
        return leaves
    if isinstance(value, list | tuple):
        leaves = {}
        for index, item in enumerate(value):
            leaves.update(_flatten(item, f"{path}[{index}]"))
        return leaves
    if isinstance(value, pulumi.FileAsset):
        return {path: f"file {value.path}"}
    return {path: json.dumps(value, default=repr)}


def make_function_dir(parent: Path) -> Path:
    """Create a minimal function source directory under `parent`."""
    directory = parent / "function-src"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "main.py").write_text(MAIN_PY, encoding="utf-8")
    (directory / "requirements.txt").write_text(
        "functions-framework==3.10.2\n", encoding="utf-8"
    )
    return directory


def build(
    config: Mapping[str, str],
    function_dir: Path,
    *,
    stack: str = "dev",
    secret_keys: Iterable[str] = CREDENTIAL_KEYS,
    secret_versions: SecretVersions | None = None,
) -> BuiltStack:
    """Run the program once under mocks and return what it registered.

    Pass the same `secret_versions` to several builds to number secret
    versions as one project would across several `pulumi up` runs.

    Raises whatever the program raises, such as `ConfigError`, after the
    runtime state has been restored; `last_registrations` then still shows what
    was registered before the error.
    """
    mocks = RecordingMocks(secret_versions)
    monitor = RecordingMonitor(mocks)
    log = EngineLog()
    recorder = DependencyRecorder()
    outputs: dict[str, object] = {}
    secret_outputs: set[str] = set()
    loaded: dict[str, StackConfig] = {}
    last_registrations.clear()

    pulumi.runtime.reset_options()
    pulumi.runtime.set_mocks(
        mocks,
        project=PROJECT_NAME,
        stack=stack,
        preview=False,
        logger=engine_logger(log),
        monitor=monitor,
    )
    pulumi.runtime.set_all_config(dict(config), list(secret_keys))
    try:
        pulumi.runtime.register_stack_transformation(recorder)

        @pulumi.runtime.test
        def program():
            cfg = load_config()
            loaded["config"] = cfg
            stack_outputs = build_stack(cfg, function_dir)

            async def resolve() -> None:
                for name, output in stack_outputs.items():
                    outputs[name] = await output.future()
                    if await output.is_secret():
                        secret_outputs.add(name)

            return asyncio.ensure_future(resolve())

        program()
    finally:
        last_registrations.extend(mocks.registrations)
        pulumi.runtime.set_all_config({}, [])
        pulumi.runtime.reset_options()

    return BuiltStack(
        registrations=mocks.registrations,
        dependencies=recorder.dependencies,
        props=recorder.props,
        parents=recorder.parents,
        outputs=outputs,
        secret_outputs=secret_outputs,
        config=loaded.get("config"),
        nodes=monitor.nodes,
        warnings=log.warnings,
    )


def register(program: Callable[[], None], *, stack: str = "dev") -> BuiltStack:
    """Run `program`, which registers resources, under mocks and record them.

    For resources outside this project's program, such as the passing and
    violating resources of the policy tests.
    """
    mocks = RecordingMocks()
    monitor = RecordingMonitor(mocks)
    recorder = DependencyRecorder()
    pulumi.runtime.reset_options()
    pulumi.runtime.set_mocks(
        mocks, project=PROJECT_NAME, stack=stack, preview=False, monitor=monitor
    )
    try:
        pulumi.runtime.register_stack_transformation(recorder)
        pulumi.runtime.test(program)()
    finally:
        pulumi.runtime.reset_options()

    return BuiltStack(
        registrations=mocks.registrations,
        dependencies=recorder.dependencies,
        props=recorder.props,
        parents=recorder.parents,
        outputs={},
        nodes=monitor.nodes,
    )


def load(
    config: Mapping[str, str],
    *,
    stack: str = "dev",
    secret_keys: Iterable[str] = CREDENTIAL_KEYS,
    warnings: list[str] | None = None,
) -> StackConfig:
    """Run `load_config` alone under mocks and return its result.

    The warnings that `load_config` logs are appended to `warnings`, if given.
    Raises whatever `load_config` raises, after restoring the runtime state.
    """
    loaded: dict[str, StackConfig] = {}
    log = EngineLog()
    pulumi.runtime.reset_options()
    pulumi.runtime.set_mocks(
        RecordingMocks(),
        project=PROJECT_NAME,
        stack=stack,
        preview=False,
        logger=engine_logger(log),
    )
    pulumi.runtime.set_all_config(dict(config), list(secret_keys))
    try:

        @pulumi.runtime.test
        def program():
            loaded["config"] = load_config()

        program()
    finally:
        pulumi.runtime.set_all_config({}, [])
        pulumi.runtime.reset_options()
        if warnings is not None:
            warnings.extend(log.warnings)
    return loaded["config"]


# The registrations of the latest `build`, kept even when it raised.
last_registrations: list[Registration] = []
