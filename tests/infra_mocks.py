"""Runs the Pulumi program under Pulumi's unit-test mocks and records it.

`build` registers the whole stack in-process with `pulumi.runtime.set_mocks`,
records every resource the mock engine receives (type token, name, inputs) and
every resource's `depends_on` through a stack transformation, and resolves the
stack outputs. Each call starts from fresh runtime state and restores it after.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
from pulumi.runtime import rpc

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


class RecordingMocks(pulumi.runtime.Mocks):
    """Returns plausible GCP outputs to the mock engine and records each resource."""

    def __init__(self) -> None:
        self.registrations: list[Registration] = []
        self.calls: list[str] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.registrations.append(Registration(args.typ, args.name, args.inputs))
        inputs = dict(args.inputs)
        resource_id, extra = _outputs_for(args.typ, args.name, inputs)
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
    if type_ == "gcp:secretmanager/secretVersion:SecretVersion":
        version_name = f"{inputs['secret']}/versions/1"
        return version_name, {"name": version_name, "version": "1"}
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
    return f"{name}-id", {}


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
class BuiltStack:
    """Everything one run of the program registered and returned."""

    registrations: list[Registration]
    dependencies: dict[ResourceKey, list[ResourceKey]]
    props: dict[ResourceKey, dict]
    parents: dict[ResourceKey, ResourceKey | None]
    outputs: dict[str, object]
    secret_outputs: set[str] = field(default_factory=set)
    config: StackConfig | None = None

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
) -> BuiltStack:
    """Run the program once under mocks and return what it registered.

    Raises whatever the program raises, such as `ConfigError`, after the
    runtime state has been restored; `last_registrations` then still shows what
    was registered before the error.
    """
    mocks = RecordingMocks()
    recorder = DependencyRecorder()
    outputs: dict[str, object] = {}
    secret_outputs: set[str] = set()
    loaded: dict[str, StackConfig] = {}
    last_registrations.clear()

    pulumi.runtime.reset_options()
    pulumi.runtime.set_mocks(mocks, project=PROJECT_NAME, stack=stack, preview=False)
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
    )


def load(
    config: Mapping[str, str],
    *,
    stack: str = "dev",
    secret_keys: Iterable[str] = CREDENTIAL_KEYS,
) -> StackConfig:
    """Run `load_config` alone under mocks and return its result.

    Raises whatever `load_config` raises, after restoring the runtime state.
    """
    loaded: dict[str, StackConfig] = {}
    pulumi.runtime.reset_options()
    pulumi.runtime.set_mocks(
        RecordingMocks(), project=PROJECT_NAME, stack=stack, preview=False
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
    return loaded["config"]


# The registrations of the latest `build`, kept even when it raised.
last_registrations: list[Registration] = []
