"""The whole stack of `template.yaml` in moto, in this process.

    with Environment() as env:                       # root = the project directory
        env.drop(Path("batch.csv"))                  # S3 put -> EventBridge rule -> execution
        runs = env.wait()                            # poll describe_execution
        env.clients.dynamodb.scan(TableName=env.name("FindingsTable"))

Resources are created from the template itself: every resource gets a physical
identity first (its `Ref` value and `Fn::GetAtt` attributes, names as CloudFormation
would derive them), then the supported types are created in moto in dependency order
(buckets, tables, topics, queues, subscriptions, functions, state machines, rules).
Types the offline mode does not need (alarms, log groups, policies, the layer) are
skipped and listed in `env.skipped`.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from moto import mock_aws

from rxguard import dynamo
from rxguard.workflow.naming import S3ObjectRef
from rxguard.workflow.naming import execution_name as workflow_execution_name
from rxguard_tools.offline.cfn import Identity, Resolver, TemplateError, load_template
from rxguard_tools.offline.lambdas import HANDLER_OUTPUT, FunctionRoute, LambdaRouter
from rxguard_tools.offline.patches import narrow_hash_key_query, route_event_targets, route_lambda

PROJECT_ROOT = Path(__file__).resolve().parents[3]
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
MOTO_CONFIG: Any = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}

BUCKET_TYPES = ("AWS::S3::Bucket",)
TABLE_TYPES = ("AWS::DynamoDB::Table", "AWS::Serverless::SimpleTable")
TOPIC_TYPES = ("AWS::SNS::Topic",)
QUEUE_TYPES = ("AWS::SQS::Queue",)
SUBSCRIPTION_TYPES = ("AWS::SNS::Subscription",)
FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")
STATE_MACHINE_TYPES = ("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine")
RULE_TYPES = ("AWS::Events::Rule",)
TERMINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")


@dataclass
class Clients:
    s3: Any
    dynamodb: Any
    sns: Any
    sqs: Any
    stepfunctions: Any
    awslambda: Any
    events: Any
    iam: Any


@dataclass
class Execution:
    """One execution the harness started (or found already started) for an S3 object."""

    arn: str
    bucket: str
    key: str
    started_new: bool
    status: str = "RUNNING"
    event: Any = None  # the EventBridge event that started it, and the rule target
    target: dict[str, Any] = field(default_factory=dict)
    output: Any = None
    error: str | None = None
    cause: str | None = None


@dataclass
class Subscription:
    """A local SQS queue subscribed to a topic (CLI and tests read what it received)."""

    name: str
    topic_arn: str
    queue_url: str
    queue_arn: str
    filter_policy: dict[str, Any] | None = None
    received: list[dict[str, Any]] = field(default_factory=list)


def execution_name(bucket: str, key: str, version: str | None, etag: str | None) -> str:
    """Deterministic, valid execution name for one S3 object (bucket, key, version or ETag):
    the same object starts at most one execution."""
    digest = hashlib.sha256(f"{bucket}\n{key}\n{version or ''}\n{etag or ''}".encode()).hexdigest()[:24]
    stem = re.sub(r"[^A-Za-z0-9_-]", "-", key.rsplit("/", 1)[-1])[:50]
    return f"{stem}-{digest}"


class Environment:
    """Context manager: moto started, the template's resources created, routing installed."""

    def __init__(
        self,
        root: Path | None = None,
        template: str = "template.yaml",
        parameters: Mapping[str, str] | None = None,
        stack_name: str = "rxguard",
        base_environment: Mapping[str, str] | None = None,
        handler_output: Any = None,
    ) -> None:
        self.root = (root or PROJECT_ROOT).resolve()
        self.template_path = self.root / template
        self.template = load_template(self.template_path)
        self.resolver = Resolver.for_template(
            self.template, parameters, region=REGION, account_id=ACCOUNT_ID, stack_name=stack_name
        )
        self.router = LambdaRouter(REGION, {"POWERTOOLS_TRACE_DISABLED": "true", **(base_environment or {})})
        self.handler_output = handler_output
        self.resources: dict[str, dict[str, Any]] = {
            k: v for k, v in self.template["Resources"].items() if isinstance(v, dict) and self._enabled(v)
        }
        self.created: dict[str, str] = {}  # logical id -> type, what exists in moto
        self.skipped: dict[str, str] = {}  # logical id -> why
        self.executions: list[Execution] = []
        self.subscriptions: list[Subscription] = []
        self.rule_prefixes: dict[str, list[str]] = {}  # bucket name -> key prefixes of rules
        self._stack = ExitStack()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Environment:
        try:
            self._stack.enter_context(mock_aws(config=MOTO_CONFIG))
            _forget_cached_clients()
            self._count_requests()
            self.clients = self._make_clients()
            self._stack.enter_context(route_lambda(self.router))
            self._stack.enter_context(route_event_targets(self._deliver_event))
            self._stack.enter_context(narrow_hash_key_query())
            if self.handler_output is not None:
                previous = HANDLER_OUTPUT.target
                HANDLER_OUTPUT.target = self.handler_output
                self._stack.callback(setattr, HANDLER_OUTPUT, "target", previous)
            self._plan()
            self._create()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.wait(timeout=30, raise_on_timeout=False)  # let running executions end inside the mock
        for route in self.router.routes.values():
            route.unload()
        self._stack.close()

    def _count_requests(self) -> None:
        """Count every DynamoDB request of clients made from now on through boto3's default
        session (the handlers' clients), by operation: `env.requests`."""
        self.requests: Counter[str] = Counter()
        emitter = boto3._get_default_session()._session.get_component("event_emitter")

        def count(model: Any, params: Mapping[str, Any], **_: Any) -> None:
            with self._lock:
                self.requests[model.name] += 1

        emitter.register("before-call.dynamodb", count, unique_id="rxguard-offline-count")
        self._stack.callback(emitter.unregister, "before-call.dynamodb", unique_id="rxguard-offline-count")

    def dynamodb_requests(self) -> dict[str, int]:
        """{"reads": n, "writes": n} from the counted requests."""
        with self._lock:
            reads = sum(n for op, n in self.requests.items() if op in _READ_OPS)
            writes = sum(n for op, n in self.requests.items() if op in _WRITE_OPS)
        return {"reads": reads, "writes": writes}

    def _make_clients(self) -> Clients:
        session = boto3.session.Session(region_name=REGION)
        config = Config(retries={"max_attempts": 2, "mode": "standard"})

        def client(name: str) -> Any:
            return session.client(name, config=config)  # type: ignore[call-overload]

        return Clients(
            s3=client("s3"),
            dynamodb=client("dynamodb"),
            sns=client("sns"),
            sqs=client("sqs"),
            stepfunctions=client("stepfunctions"),
            awslambda=client("lambda"),
            events=client("events"),
            iam=client("iam"),
        )

    # --------------------------------------------------------------------- lookup
    def identity(self, logical_id: str) -> Identity:
        return self.resolver.identities[logical_id]

    def name(self, logical_id: str) -> str:
        """Physical name (bucket, table, function, queue URL, topic ARN...) = its Ref value."""
        return self.identity(logical_id).ref

    def arn(self, logical_id: str) -> str:
        ident = self.identity(logical_id)
        return ident.attrs.get("Arn") or ident.attrs.get("TopicArn") or ident.ref

    def of_type(self, *types: str) -> list[str]:
        return [k for k, v in self.resources.items() if v.get("Type") in types]

    def parameter(self, name: str) -> str | None:
        return self.resolver.parameters.get(name)

    # ------------------------------------------------------------------- planning
    def _enabled(self, resource: Mapping[str, Any]) -> bool:
        cond = resource.get("Condition")
        return True if cond is None else self.resolver.condition(str(cond))

    def _plan(self) -> None:
        """Give every resource its identity; names may refer to other resources, so
        resolve until nothing more can be."""
        pending = dict(self.resources)
        while pending:
            progressed = False
            for logical_id, resource in list(pending.items()):
                try:
                    self.resolver.identities[logical_id] = self._identity(logical_id, resource)
                except TemplateError:
                    continue
                del pending[logical_id]
                progressed = True
            if not progressed:
                names = ", ".join(sorted(pending))
                raise TemplateError(f"{self.template_path}: cannot name resources {names} (circular or unknown refs)")

    def _prop_name(self, resource: Mapping[str, Any], key: str) -> str | None:
        value = (resource.get("Properties") or {}).get(key)
        return None if value is None else str(self.resolver.resolve(value))

    def _identity(self, logical_id: str, resource: Mapping[str, Any]) -> Identity:
        kind = str(resource.get("Type"))
        stack, region, account = self.resolver.stack_name, REGION, ACCOUNT_ID
        if kind in BUCKET_TYPES:
            name = self._prop_name(resource, "BucketName") or f"{stack}-{logical_id}".lower()
            return Identity(
                name,
                {
                    "Arn": f"arn:aws:s3:::{name}",
                    "DomainName": f"{name}.s3.amazonaws.com",
                    "RegionalDomainName": f"{name}.s3.{region}.amazonaws.com",
                },
            )
        if kind in TABLE_TYPES:
            name = self._prop_name(resource, "TableName") or f"{stack}-{logical_id}"
            arn = f"arn:aws:dynamodb:{region}:{account}:table/{name}"
            return Identity(name, {"Arn": arn, "StreamArn": f"{arn}/stream/offline"})
        if kind in TOPIC_TYPES:
            name = self._prop_name(resource, "TopicName") or f"{stack}-{logical_id}"
            arn = f"arn:aws:sns:{region}:{account}:{name}"
            return Identity(arn, {"TopicArn": arn, "TopicName": name})
        if kind in QUEUE_TYPES:
            name = self._prop_name(resource, "QueueName") or f"{stack}-{logical_id}"
            fifo = bool(self.resolver.resolve((resource.get("Properties") or {}).get("FifoQueue", False)))
            if fifo and not name.endswith(".fifo"):
                name += ".fifo"
            url = f"https://sqs.{region}.amazonaws.com/{account}/{name}"
            return Identity(url, {"Arn": f"arn:aws:sqs:{region}:{account}:{name}", "QueueName": name, "QueueUrl": url})
        if kind in FUNCTION_TYPES:
            name = self._prop_name(resource, "FunctionName") or f"{stack}-{logical_id}"
            return Identity(name, {"Arn": f"arn:aws:lambda:{region}:{account}:function:{name}"})
        if kind in STATE_MACHINE_TYPES:
            key = "Name" if kind == "AWS::Serverless::StateMachine" else "StateMachineName"
            name = self._prop_name(resource, key) or f"{stack}-{logical_id}"
            arn = f"arn:aws:states:{region}:{account}:stateMachine:{name}"
            return Identity(arn, {"Arn": arn, "Name": name})
        if kind in RULE_TYPES:
            name = self._prop_name(resource, "Name") or f"{stack}-{logical_id}"
            return Identity(name, {"Arn": f"arn:aws:events:{region}:{account}:rule/{name}"})
        if kind == "AWS::Logs::LogGroup":
            name = self._prop_name(resource, "LogGroupName") or f"{stack}-{logical_id}"
            return Identity(name, {"Arn": f"arn:aws:logs:{region}:{account}:log-group:{name}:*"})
        if kind == "AWS::IAM::Role":
            name = self._prop_name(resource, "RoleName") or f"{stack}-{logical_id}"
            return Identity(name, {"Arn": f"arn:aws:iam::{account}:role/{name}", "RoleId": name})
        if kind == "AWS::Serverless::LayerVersion":
            arn = f"arn:aws:lambda:{region}:{account}:layer:{stack}-{logical_id}:1"
            return Identity(arn, {"Arn": arn})
        # anything else: a name and an ARN-shaped attribute, enough for Ref/GetAtt in others
        service = kind.split("::")[1].lower() if kind.count("::") >= 2 else "offline"
        name = f"{stack}-{logical_id}"
        return Identity(name, {"Arn": f"arn:aws:{service}:{region}:{account}:{name}"})

    # ------------------------------------------------------------------- creation
    def _create(self) -> None:
        steps: list[tuple[tuple[str, ...], Callable[[str, dict[str, Any]], None]]] = [
            (BUCKET_TYPES, self._create_bucket),
            (TABLE_TYPES, self._create_table),
            (TOPIC_TYPES, self._create_topic),
            (QUEUE_TYPES, self._create_queue),
            (SUBSCRIPTION_TYPES, self._create_subscription),
            (FUNCTION_TYPES, self._create_function),
            (STATE_MACHINE_TYPES, self._create_state_machine),
            (RULE_TYPES, self._create_rule),
        ]
        handled = {t for types, _ in steps for t in types}
        for types, create in steps:
            for logical_id in self.of_type(*types):
                resource = self.resources[logical_id]
                create(logical_id, self.resolver.resolve(resource.get("Properties") or {}))
                self.created[logical_id] = str(resource["Type"])
        for logical_id, resource in self.resources.items():
            if resource.get("Type") not in handled:
                self.skipped[logical_id] = f"{resource.get('Type')}: not needed offline"

    def _create_bucket(self, logical_id: str, props: dict[str, Any]) -> None:
        name = self.name(logical_id)
        self.clients.s3.create_bucket(Bucket=name)
        if (props.get("VersioningConfiguration") or {}).get("Status") == "Enabled":
            self.clients.s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        notification = props.get("NotificationConfiguration") or {}
        if (notification.get("EventBridgeConfiguration") or {}).get("EventBridgeEnabled") in (True, "true"):
            self.clients.s3.put_bucket_notification_configuration(
                Bucket=name, NotificationConfiguration={"EventBridgeConfiguration": {}}
            )

    def _create_table(self, logical_id: str, props: dict[str, Any]) -> None:
        name = self.name(logical_id)
        if self.resources[logical_id]["Type"] == "AWS::Serverless::SimpleTable":
            pk = props.get("PrimaryKey") or {"Name": "id", "Type": "String"}
            kind = {"String": "S", "Number": "N", "Binary": "B"}[pk.get("Type", "String")]
            self.clients.dynamodb.create_table(
                TableName=name,
                AttributeDefinitions=[{"AttributeName": pk["Name"], "AttributeType": kind}],
                KeySchema=[{"AttributeName": pk["Name"], "KeyType": "HASH"}],
                BillingMode="PAY_PER_REQUEST",
            )
            return
        kwargs: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if kwargs["BillingMode"] == "PROVISIONED":
            kwargs["ProvisionedThroughput"] = props.get("ProvisionedThroughput")
        for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            if props.get(key):
                kwargs[key] = [
                    {k: v for k, v in index.items() if k in ("IndexName", "KeySchema", "Projection")}
                    for index in props[key]
                ]
        stream = props.get("StreamSpecification")
        if stream:
            kwargs["StreamSpecification"] = {"StreamEnabled": True, **stream}
        self.clients.dynamodb.create_table(**kwargs)
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled") in (True, "true"):
            self.clients.dynamodb.update_time_to_live(
                TableName=name, TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True}
            )

    def _create_topic(self, logical_id: str, props: dict[str, Any]) -> None:
        attrs = {}
        if props.get("FifoTopic") in (True, "true"):
            attrs["FifoTopic"] = "true"
        arn = self.clients.sns.create_topic(Name=self.identity(logical_id).attrs["TopicName"], Attributes=attrs)[
            "TopicArn"
        ]
        for sub in props.get("Subscription") or []:
            self.clients.sns.subscribe(TopicArn=arn, Protocol=sub["Protocol"], Endpoint=sub["Endpoint"])

    def _create_queue(self, logical_id: str, props: dict[str, Any]) -> None:
        attrs = {
            k: str(props[k]).lower() if isinstance(props[k], bool) else str(props[k])
            for k in ("FifoQueue", "VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds")
            if k in props
        }
        self.clients.sqs.create_queue(QueueName=self.identity(logical_id).attrs["QueueName"], Attributes=attrs)

    def _create_subscription(self, logical_id: str, props: dict[str, Any]) -> None:
        attributes = {}
        if props.get("FilterPolicy") is not None:
            policy = props["FilterPolicy"]
            attributes["FilterPolicy"] = policy if isinstance(policy, str) else json.dumps(policy)
        if props.get("FilterPolicyScope"):
            attributes["FilterPolicyScope"] = props["FilterPolicyScope"]
        if props.get("RawMessageDelivery") is not None:
            attributes["RawMessageDelivery"] = str(props["RawMessageDelivery"]).lower()
        self.clients.sns.subscribe(
            TopicArn=props["TopicArn"], Protocol=props["Protocol"], Endpoint=props["Endpoint"], Attributes=attributes
        )

    def _lambda_role(self) -> str:
        if not hasattr(self, "_role_arn"):
            doc = {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
                ],
            }
            role = self.clients.iam.create_role(RoleName="rxguard-offline", AssumeRolePolicyDocument=json.dumps(doc))
            self._role_arn: str = role["Role"]["Arn"]
        return self._role_arn

    def _function_settings(self, props: Mapping[str, Any]) -> dict[str, Any]:
        """SAM Globals.Function merged under the function's own properties."""
        globals_ = self.resolver.resolve(((self.template.get("Globals") or {}).get("Function")) or {})
        merged = {**globals_, **props}
        env = {
            **((globals_.get("Environment") or {}).get("Variables") or {}),
            **((props.get("Environment") or {}).get("Variables") or {}),
        }
        merged["Environment"] = {"Variables": {k: _env_value(v) for k, v in env.items()}}
        return merged

    def _create_function(self, logical_id: str, props: dict[str, Any]) -> None:
        settings = self._function_settings(props)
        name = self.name(logical_id)
        code_uri = settings.get("CodeUri")
        if isinstance(code_uri, dict):  # {Bucket, Key}: nothing to run offline
            self.skipped[logical_id] = "AWS::Serverless::Function: CodeUri in S3, no local code"
            return
        code_dir = self.root / str(code_uri or ".")
        handler = str(settings.get("Handler") or "app.lambda_handler")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("app.py", "# offline: the real handler runs in-process\n")
        variables = settings["Environment"]["Variables"]
        self.clients.awslambda.create_function(
            FunctionName=name,
            Runtime=str(settings.get("Runtime") or "python3.12"),
            Role=self._lambda_role(),
            Handler=handler,
            Code={"ZipFile": buffer.getvalue()},
            Timeout=int(settings.get("Timeout") or 3),
            MemorySize=int(settings.get("MemorySize") or 128),
            Environment={"Variables": variables},
        )
        self.router.add(
            FunctionRoute(
                logical_id=logical_id,
                function_name=name,
                function_arn=self.arn(logical_id),
                code_dir=code_dir,
                handler=handler,
                environment=variables,
                memory_mb=int(settings.get("MemorySize") or 128),
                timeout_s=int(settings.get("Timeout") or 3),
            )
        )
        for event_id, event in (props.get("Events") or {}).items():
            self._create_sam_event(logical_id, event_id, event, self.arn(logical_id))

    def _create_state_machine(self, logical_id: str, props: dict[str, Any]) -> None:
        if "DefinitionUri" in props:
            uri = props["DefinitionUri"]
            if isinstance(uri, dict):
                raise TemplateError(f"{logical_id}: DefinitionUri in S3 is not supported offline")
            text = (self.root / str(uri)).read_text(encoding="utf-8")
        elif "Definition" in props:
            text = json.dumps(props["Definition"])
        elif "DefinitionString" in props:
            text = str(props["DefinitionString"])
        else:
            raise TemplateError(f"{logical_id}: no Definition, DefinitionUri or DefinitionString")
        for key, value in (props.get("DefinitionSubstitutions") or {}).items():
            text = text.replace("${" + key + "}", str(value))
        leftover = re.findall(r'"[^"]*\$\{(\w+)\}', text)
        if leftover:
            raise TemplateError(f"{logical_id}: definition placeholders without substitution: {sorted(set(leftover))}")
        self.clients.stepfunctions.create_state_machine(
            name=self.identity(logical_id).attrs["Name"],
            definition=_for_moto_parser(text),
            roleArn=self._lambda_role(),
            type=str(props.get("Type") or props.get("StateMachineType") or "STANDARD"),
        )
        for event_id, event in (props.get("Events") or {}).items():
            self._create_sam_event(logical_id, event_id, event, self.arn(logical_id))

    def _create_sam_event(self, owner: str, event_id: str, event: Mapping[str, Any], target_arn: str) -> None:
        kind = event.get("Type")
        props = event.get("Properties") or {}
        if kind not in ("EventBridgeRule", "CloudWatchEvent"):
            self.skipped[f"{owner}.{event_id}"] = f"event source {kind}: not routed offline"
            return
        name = str(props.get("RuleName") or f"{self.resolver.stack_name}-{owner}-{event_id}")
        target: dict[str, Any] = {"Id": f"{owner}{event_id}"[:64], "Arn": target_arn}
        if props.get("Input"):
            target["Input"] = props["Input"]
        if props.get("InputPath"):
            target["InputPath"] = props["InputPath"]
        self._put_rule(name, props.get("Pattern") or {}, props.get("EventBusName"), [target])
        self.created[f"{owner}.{event_id}"] = "AWS::Events::Rule"

    def _create_rule(self, logical_id: str, props: dict[str, Any]) -> None:
        targets = [
            {k: v for k, v in t.items() if k in ("Id", "Arn", "Input", "InputPath", "InputTransformer")}
            for t in props.get("Targets") or []
        ]
        if "EventPattern" not in props:
            self.skipped[logical_id] = "AWS::Events::Rule without EventPattern (schedule): not run offline"
            return
        self._put_rule(self.name(logical_id), props["EventPattern"], props.get("EventBusName"), targets)

    def _put_rule(self, name: str, pattern: Mapping[str, Any], bus: Any, targets: list[dict[str, Any]]) -> None:
        kwargs: dict[str, Any] = {"Name": name, "EventPattern": json.dumps(pattern), "State": "ENABLED"}
        if bus:
            kwargs["EventBusName"] = str(bus)
        self.clients.events.put_rule(**kwargs)
        target_kwargs: dict[str, Any] = {"Rule": name, "Targets": targets}
        if bus:
            target_kwargs["EventBusName"] = str(bus)
        self.clients.events.put_targets(**target_kwargs)
        detail = pattern.get("detail") or {}
        buckets = ((detail.get("bucket") or {}).get("name")) or []
        keys = ((detail.get("object") or {}).get("key")) or []
        prefixes = [k["prefix"] for k in keys if isinstance(k, dict) and "prefix" in k] or [""]
        for bucket in buckets:
            self.rule_prefixes.setdefault(str(bucket), []).extend(prefixes)

    # ------------------------------------------------------------------- routing
    def _deliver_event(self, target: dict[str, Any], event: Any) -> None:
        """An EventBridge rule matched: start the state machine (or invoke the function)."""
        arn = str(target["Arn"])
        event = _as_on_aws(event)
        if ":states:" in arn:
            detail = event.get("detail") or {} if isinstance(event, dict) else {}
            bucket = str((detail.get("bucket") or {}).get("name", ""))
            obj = detail.get("object") or {}
            key = str(obj.get("key", ""))
            name = _execution_name_for(detail) or execution_name(bucket, key, obj.get("version-id"), obj.get("etag"))
            execution_arn = arn.replace(":stateMachine:", ":execution:") + ":" + name
            sfn = self.clients.stepfunctions
            try:
                sfn.start_execution(stateMachineArn=arn, name=name, input=json.dumps(event))
                started_new = True
            except sfn.exceptions.ExecutionAlreadyExists:
                started_new = False  # the same object again: at most one execution
            with self._lock:
                self.executions.append(Execution(execution_arn, bucket, key, started_new, event=event, target=target))
        else:
            self.clients.awslambda.invoke(FunctionName=arn, InvocationType="Event", Payload=json.dumps(event))

    # ------------------------------------------------------------------ operations
    def ingest_bucket(self) -> str:
        """The bucket an EventBridge rule watches (the only one, or IngestBucket)."""
        if len(self.rule_prefixes) == 1:
            return next(iter(self.rule_prefixes))
        if "IngestBucket" in self.resolver.identities:
            return self.name("IngestBucket")
        raise TemplateError("no EventBridge rule watches a bucket of the template")

    def drop(self, path: Path | None = None, *, body: bytes | None = None, key: str | None = None) -> list[Execution]:
        """Put a file into the ingest bucket under the rule's key prefix; returns the
        executions the Object Created event started (or found already started)."""
        bucket = self.ingest_bucket()
        prefix = (self.rule_prefixes.get(bucket) or [""])[0]
        if body is None:
            if path is None:
                raise ValueError("drop() needs a path or a body")
            body = path.read_bytes()
        key = key or prefix + (path.name if path is not None else "batch")
        if not key.startswith(prefix):
            key = prefix + key
        before = len(self.executions)
        self.clients.s3.put_object(Bucket=bucket, Key=key, Body=body)
        with self._lock:
            return self.executions[before:]

    def redeliver(self, execution: Execution) -> Execution:
        """Deliver the event that started `execution` once more, as EventBridge's
        at-least-once delivery may: returns the resulting (deduplicated) execution."""
        before = len(self.executions)
        self._deliver_event(execution.target, execution.event)
        with self._lock:
            return self.executions[before]

    def describe(self, execution: Execution) -> Execution:
        desc = self.clients.stepfunctions.describe_execution(executionArn=execution.arn)
        execution.status = desc["status"]
        if desc.get("output"):
            execution.output = json.loads(desc["output"])
        execution.error = desc.get("error")
        execution.cause = desc.get("cause")
        return execution

    def history(self, execution: Execution | str) -> list[dict[str, Any]]:
        arn = execution if isinstance(execution, str) else execution.arn
        events: list[dict[str, Any]] = []
        paginator = self.clients.stepfunctions.get_paginator("get_execution_history")
        for page in paginator.paginate(executionArn=arn):
            events.extend(page["events"])
        return events

    def wait(
        self,
        executions: list[Execution] | None = None,
        timeout: float = 600,
        poll: float = 0.1,
        progress: Callable[[list[Execution]], None] | None = None,
        raise_on_timeout: bool = True,
    ) -> list[Execution]:
        """Poll describe_execution until every execution ends."""
        todo = list(self.executions if executions is None else executions)
        deadline = time.monotonic() + timeout
        while True:
            running = [e for e in todo if self.describe(e).status not in TERMINAL]
            if progress is not None:
                progress(todo)
            if not running:
                return todo
            if time.monotonic() > deadline:
                if raise_on_timeout:
                    raise TimeoutError(f"{len(running)} execution(s) still running after {timeout:.0f} s")
                return todo
            time.sleep(poll)

    def example_subscriptions(self) -> list[tuple[str, str, dict[str, Any], str]]:
        """The template's SNS subscriptions with a filter policy, also those its conditions
        leave out (examples waiting for an endpoint): (logical id, topic ARN, policy, scope)."""
        out = []
        for logical_id, resource in self.template["Resources"].items():
            if not isinstance(resource, dict) or resource.get("Type") not in SUBSCRIPTION_TYPES:
                continue
            props = resource.get("Properties") or {}
            if not props.get("FilterPolicy"):
                continue
            try:
                topic = str(self.resolver.resolve(props["TopicArn"]))
                policy = self.resolver.resolve(props["FilterPolicy"])
                scope = str(self.resolver.resolve(props.get("FilterPolicyScope") or "MessageAttributes"))
            except TemplateError:
                continue
            out.append((logical_id, topic, json.loads(policy) if isinstance(policy, str) else policy, scope))
        return out

    def subscribe_queue(
        self,
        topic_logical_or_arn: str,
        name: str,
        filter_policy: Mapping[str, Any] | None = None,
        filter_policy_scope: str = "MessageAttributes",
    ) -> Subscription:
        """A local SQS queue subscribed to a topic (raw delivery: messages as published)."""
        topic_arn = topic_logical_or_arn if topic_logical_or_arn.startswith("arn:") else self.arn(topic_logical_or_arn)
        queue_name = re.sub(r"[^A-Za-z0-9_-]", "-", f"offline-{name}")[:80]
        url = self.clients.sqs.create_queue(QueueName=queue_name)["QueueUrl"]
        queue_arn = self.clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        attributes = {"RawMessageDelivery": "true"}
        if filter_policy:
            attributes["FilterPolicy"] = json.dumps(filter_policy)
            attributes["FilterPolicyScope"] = filter_policy_scope
        self.clients.sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes=attributes)
        sub = Subscription(name, topic_arn, url, queue_arn, dict(filter_policy) if filter_policy else None)
        self.subscriptions.append(sub)
        return sub

    def drain(self, subscription: Subscription) -> list[dict[str, Any]]:
        """Receive (and delete) everything waiting on a subscribed queue: returns the new
        messages (`subscription.received` keeps them all)."""
        sqs = self.clients.sqs
        new: list[dict[str, Any]] = []
        while True:
            got = sqs.receive_message(
                QueueUrl=subscription.queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
            ).get("Messages", [])
            if not got:
                return new
            new.extend(got)
            subscription.received.extend(got)
            sqs.delete_message_batch(
                QueueUrl=subscription.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)],
            )

    def list_objects(self, bucket: str, prefix: str = "") -> Iterator[str]:
        paginator = self.clients.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"]

    def scan_table(self, logical_id: str) -> list[dict[str, Any]]:
        """Every item of a table, deserialized to plain Python values."""
        from boto3.dynamodb.types import TypeDeserializer

        des = TypeDeserializer()
        items: list[dict[str, Any]] = []
        paginator = self.clients.dynamodb.get_paginator("scan")
        for page in paginator.paginate(TableName=self.name(logical_id)):
            items.extend({k: des.deserialize(v) for k, v in item.items()} for item in page["Items"])
        return items


_READ_OPS = {"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"}
_WRITE_OPS = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}


def _as_on_aws(event: Any) -> Any:
    """moto's S3 "Object Created" detail spells the ETag `eTag` and carries a null
    `version-id` for unversioned buckets; AWS sends `etag` and omits the version."""
    if not isinstance(event, dict) or not isinstance((event.get("detail") or {}).get("object"), dict):
        return event
    obj = dict(event["detail"]["object"])
    if "eTag" in obj:
        obj.setdefault("etag", obj.pop("eTag"))
    if obj.get("version-id") is None:
        obj.pop("version-id", None)
    return {**event, "detail": {**event["detail"], "object": obj}}


def _for_moto_parser(definition: str) -> str:
    """moto's ASL grammar reads ToleratedFailurePercentage only as a decimal number
    (`100` fails to parse, `100.0` parses); AWS takes both. Same value, moto's spelling."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: float(v) if k == "ToleratedFailurePercentage" and isinstance(v, int) else walk(v)
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    try:
        return json.dumps(walk(json.loads(definition)))
    except ValueError:
        return definition  # not JSON: let moto report it


def _execution_name_for(detail: Mapping[str, Any]) -> str | None:
    """The workflow's own naming of an S3 object's execution, where the layer has it (so
    execution name and batch id agree); None falls back to `execution_name` here."""
    try:
        return str(workflow_execution_name(S3ObjectRef.from_detail(detail)))
    except Exception:  # a detail the workflow cannot read: Prepare will report it
        return None


def _forget_cached_clients() -> None:
    """Modules that cache boto3 clients drop them, so a fresh moto and the request
    counter see new clients."""
    reset = getattr(dynamo, "reset_clients", None)
    if callable(reset):
        reset()


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)
