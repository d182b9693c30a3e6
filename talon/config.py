"""Talon's static configuration, parsed once into an immutable `Settings`.

Layer L1: stdlib + pyyaml (through `talon.yamlio`). Sources, lowest precedence first: the
YAML file, environment variables, command-line overrides. Keys match case-insensitively
(upstream's viper lower-cases them) while user data inside maps keeps its case. Unknown
keys are errors naming the nearest known key, and every problem from every source is
reported together in one `ConfigError`. The schema lives on the dataclass fields (type,
default, `metadata`, read by `talon.configschema`), so the loader, `ENV_VARS` and the
docs cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from talon import models, names, params, yamlio
from talon.configschema import Field, convert, fields_of, meta, show
from talon.errors import ConfigError, EventError
from talon.redact import MASK
from talon.registry import Registry

_NOTIFIERS = "notifiers"


def _log_format(value: str) -> str:
    word = value.strip().lower()
    if word not in ("text", "color", "json"):
        raise ValueError(f"expected one of text, color, json, got {value!r}")
    return word


OTLP_PROTOCOLS = ("grpc", "http/protobuf")
GRPC_PORT, HTTP_PORT = 4317, 4318
"""OTLP's standard ports; with http/protobuf, the default port (4317) means 4318."""


def _otlp_protocol(value: str) -> str:
    word = value.strip().lower()
    if word not in OTLP_PROTOCOLS:
        raise ValueError(f"expected one of {', '.join(OTLP_PROTOCOLS)}, got {value!r}")
    return word


_EVENT_FIELDS = ("rule", "priority", "source", "hostname", "output")
_OUTPUT_FIELDS = "output_fields."


def _dedup_key(items: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for item in items:
        text = item.strip()
        if text.lower() in _EVENT_FIELDS:
            out.append(text.lower())
        elif text.lower().startswith(_OUTPUT_FIELDS) and len(text) > len(_OUTPUT_FIELDS):
            out.append(_OUTPUT_FIELDS + text[len(_OUTPUT_FIELDS):])
        else:
            raise ValueError(f"unknown event field {item!r} (expected one of "
                             f"{', '.join(_EVENT_FIELDS)} or output_fields.<field>)")
    return tuple(out)


def _lower_items(items: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(item.lower() for item in items)


def _lease_name(value: str) -> str:
    text = value.strip()
    if not text:
        raise ValueError("must not be empty")
    try:  # room left for "-<32 hex>" within a subdomain's 253
        names.check_name(text, "lease_name", names.SUBDOMAIN)
    except EventError:
        raise ValueError(f"'{text}' is not a valid name prefix: lowercase letters, digits, "
                         "'-' and '.', at most 200 characters") from None
    if len(text) > 200:
        raise ValueError(f"'{text}' is too long for a name prefix: at most 200 characters")
    return text


def _namespace(value: str) -> str:
    text = value.strip()
    if text:
        try:
            names.check_name(text, "namespace", names.LABEL)
        except EventError:
            raise ValueError(f"'{text}' is not a valid namespace name") from None
    return text


BUDGET_SCOPES = ("cluster", "namespace", "owner")
PROTECTED_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
"""Default protected namespaces (talon.rules.validate keeps the same tuple for `check`)."""


def budget_text(item: Any) -> str:
    """A budget as `scope:max/per_seconds`, from that text or a {scope, max, per_seconds} map."""
    if isinstance(item, Mapping):
        unknown = set(item) - {"scope", "max", "per_seconds"}
        if unknown:
            raise ValueError(f"unknown budget key(s) {sorted(map(str, unknown))}")
        item = f"{item.get('scope')}:{item.get('max')}/{item.get('per_seconds')}"
    match = re.fullmatch(r"\s*(\w+)\s*:\s*(\d+)\s*/\s*(\d+)\s*", str(item))
    if match is None or match.group(1) not in BUDGET_SCOPES or int(match.group(3)) <= 0:
        raise ValueError(f"budget {item!r}: expected scope:max/per_seconds with a scope among "
                         f"{', '.join(BUDGET_SCOPES)} and per_seconds > 0")
    return f"{match.group(1)}:{int(match.group(2))}/{int(match.group(3))}"


def _budgets(items: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(budget_text(item) for item in items)


def _selector(value: str) -> str:
    for term in filter(None, (t.strip() for t in value.split(","))):
        key, eq, _value = term.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"'{term}' is not key=value")
    return value.strip()


@dataclass(frozen=True, slots=True, kw_only=True)
class OtelSettings:
    """OpenTelemetry export (section `otel`)."""

    traces_enabled: bool = field(default=False, metadata=meta("Export traces"))
    """Send traces to the OTEL collector."""
    metrics_enabled: bool = field(default=False, metadata=meta("Export metrics"))
    """Send metrics to the OTEL collector."""
    collector_endpoint: str = field(default="localhost", metadata=meta("OTEL collector host"))
    """Host name or address of the OTEL collector."""
    collector_port: int = field(default=4317, metadata=meta(
        "OTEL collector port", min_=1, max_=65535))
    """gRPC port of the OTEL collector."""
    collector_use_insecure_grpc: bool = field(default=False, metadata=meta(
        "Plain-text gRPC to the collector", aliases=("otel.use_insecure_grpc",),
        env=("OTEL_USE_INSECURE_GRPC",)))
    """Talk to the collector without TLS (`use_insecure_grpc` is accepted, as in the docs)."""
    timeout: int = field(default=10, metadata=meta("OTEL export timeout (s)", min_=1))
    """Export timeout in seconds."""
    protocol: str = field(default="grpc", metadata=meta(
        "OTLP protocol: grpc, http/protobuf", check=_otlp_protocol))
    """OTLP over gRPC, or over HTTP with protobuf bodies (then the default port is 4318 and
    `collector_use_insecure_grpc` means plain `http://`)."""

    @property
    def port(self) -> int:
        """The collector port: `collector_port`, but 4318 for http/protobuf left at 4317."""
        if self.protocol == "http/protobuf" and self.collector_port == GRPC_PORT:
            return HTTP_PORT
        return self.collector_port


@dataclass(frozen=True, slots=True, kw_only=True)
class DedupSettings:
    """De-duplication of repeated events and the leader lease (section `deduplication`)."""

    leader_election: bool = field(default=True, metadata=meta(
        "Dedup across replicas via Leases"))
    """With a reachable cluster, deduplicate across replicas through Kubernetes Leases."""
    time_window_seconds: int = field(default=5, metadata=meta(
        "Dedup window (s), 0 disables", min_=0))
    """Events with the same key inside this window run once; 0 disables de-duplication."""
    key: tuple[str, ...] = field(default=(), metadata=meta(
        "Event fields forming the dedup key", check=_dedup_key))
    """Event fields making the key (`rule`, `output_fields.<field>`…); empty = the output text."""
    lease_name: str = field(default="falco-talon", metadata=meta(
        "Prefix of the dedup Lease names", check=_lease_name))
    """Dedup Leases are named `<lease_name>-<hash of the key>`."""
    lease_namespace: str = field(default="", metadata=meta(
        "Namespace of the dedup Leases", env=("NAMESPACE",), check=_namespace))
    """Namespace of the Leases; empty = the pod's own namespace, else `default`."""
    timeout_seconds: float = field(default=2.0, metadata=meta(
        "Max wait for a dedup decision (s)", gt=0))
    """Longest a claim may take; past it the event is deduplicated locally and acted on."""
    max_entries: int = field(default=100000, metadata=meta("Max keys remembered", min_=1))
    """Upper bound on the keys remembered in the window (oldest dropped first)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainmentSettings:
    """Expiry of the changes made with a `ttl` (section `containment`)."""

    enabled: bool = field(default=True, metadata=meta("Undo expired containment"))
    """Run the loop that undoes what Talon marked once its ttl has passed."""
    reconcile_seconds: float = field(default=30.0, metadata=meta(
        "Expiry check interval (s)", gt=0))
    """How often the marked objects are listed and the expired ones undone."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GovernorSettings:
    """Budgets of disruptive actions (section `governor`)."""

    budgets: tuple[str, ...] = field(default=(), metadata=meta(
        "Budgets: scope:max/per_seconds (scope: cluster, namespace, owner)",
        check=_budgets))
    """At most `max` disruptive actions per `per_seconds` in each scope; in YAML either
    `{scope: namespace, max: 5, per_seconds: 600}` or `namespace:5/600`."""
    trip_to_dry_run: bool = field(default=False, metadata=meta(
        "Go dry-run when a budget is exceeded"))
    """Once a budget is exceeded, every disruptive action is dry-run until
    `talon governor reset` (or a restart)."""
    reset_file: str = field(default="", metadata=meta(
        "File `governor reset` touches (watched)"))
    """The server resets a trip when this file is written after it; empty = a file named
    after the listen port in the temporary folder."""
    lease_namespace: str = field(default="", metadata=meta(
        "Namespace of the budget Leases", check=_namespace))
    """Where the cluster-wide counts live; empty = the dedup Lease namespace."""
    cluster_wide: bool = field(default=True, metadata=meta(
        "Count across replicas through Leases"))
    """With a reachable cluster, replicas share their counts (local count on API errors)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtectedSettings:
    """Workloads disruptive actions leave alone (section `protected`)."""

    namespaces: tuple[str, ...] = field(default=PROTECTED_NAMESPACES, metadata=meta(
        "Protected namespaces (plus Talon's own)"))
    """Disruptive actions skip pods in these namespaces and in Talon's own namespace."""
    selector: str = field(default="talon.falco.org/protected=true", metadata=meta(
        "Protection label selector (pod, namespace or node)", check=_selector))
    """`key=value[,key=value]`: a pod, its namespace or its node carrying it is protected."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalSettings:
    """The durable event journal (section `journal`)."""

    path: str = field(default="", metadata=meta("Journal file (SQLite); empty = off"))
    """SQLite file in which accepted events are committed before POST answers 200, and
    failed actions are kept; empty keeps events in memory only."""
    fsync: bool = field(default=True, metadata=meta("Commits survive power loss"))
    """True: synchronous=FULL (survives power loss); false: NORMAL (process crashes only)."""
    max_events: int = field(default=100000, metadata=meta(
        "Journal capacity (events not done)", min_=1))
    """Events accepted and not done (waiting or running); beyond it POST / answers 503."""
    max_bytes: int = field(default=268435456, metadata=meta(
        "Journal capacity (bytes not done)", min_=1024))
    """Bytes (request bodies) of the events not done; beyond it POST / answers 503."""
    retention_seconds: float = field(default=86400.0, metadata=meta(
        "Keep done events (s)", min_=0))
    """Done events (and resolved failures) are deleted this long after they finish."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KubernetesSettings:
    """Client-side limits on the Kubernetes API requests (section `kubernetes`)."""

    qps: float = field(default=0.0, metadata=meta(
        "Kubernetes API requests/s (0 = no limit)", min_=0))
    """Average rate of API requests, shared by all workers; 0 disables the limit. A guard
    for small API servers: requests wait for their turn, within the action timeout."""
    burst: int = field(default=10, metadata=meta(
        "Kubernetes API requests at once above qps", min_=1))
    """Requests that may go at once before `qps` paces them (the bucket's size)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AwsSettings:
    """AWS credentials for aws:* plug-ins (section `aws`); empty = the SDK's own chain."""

    role_arn: str = field(default="", metadata=meta("IAM role to assume"))
    """ARN of a role to assume."""
    external_id: str = field(default="", metadata=meta(
        "External ID for the role", env=("AWS_ROLE_EXTERNAL_ID",)))
    """External ID used when assuming `role_arn`."""
    region: str = field(default="", metadata=meta("AWS region"))
    """Region; empty = the SDK's default."""
    access_key: str = field(default="", metadata=meta("AWS access key"))
    """Static access key (secret)."""
    secret_key: str = field(default="", metadata=meta("AWS secret key"))
    """Static secret key (secret)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MinioSettings:
    """MinIO connection for the minio:s3 output (section `minio`)."""

    endpoint: str = field(default="", metadata=meta("MinIO endpoint"))
    """host:port of the MinIO server."""
    access_key: str = field(default="", metadata=meta("MinIO access key"))
    """Access key (secret)."""
    secret_key: str = field(default="", metadata=meta("MinIO secret key"))
    """Secret key (secret)."""
    use_ssl: bool = field(default=False, metadata=meta("Use TLS with MinIO"))
    """Connect with TLS."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GcpSettings:
    """Google Cloud access for gcp:* plug-ins (section `gcp`)."""

    credentials_path: str = field(default="", metadata=meta("GCP credentials JSON file"))
    """Path of a service-account JSON file; empty = application default credentials."""
    region: str = field(default="", metadata=meta("GCP region"))
    """Default region."""


def _client_names(items: tuple[str, ...]) -> tuple[str, ...]:
    names = tuple(item.strip().lower() for item in items if item.strip())
    bad = [n for n in names if not n.isascii() or any(c.isspace() for c in n)]
    if bad:
        raise ValueError(f"not a certificate name: {bad[0]!r}")
    return names


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsSettings:
    """TLS on the HTTP listener (section `tls`); no cert_file = plain HTTP."""

    cert_file: str = field(default="", metadata=meta("Listener certificate (PEM)"))
    """Server certificate chain, PEM; re-read when the file changes."""
    key_file: str = field(default="", metadata=meta("Listener private key (PEM)"))
    """Private key of `cert_file`, PEM; re-read when the file changes."""
    client_ca_file: str = field(default="", metadata=meta(
        "CA(s) that sign client certificates (mTLS)"))
    """CA bundle, PEM: clients must present a certificate it signed (optional at the
    handshake when tokens or signatures are accepted too)."""
    allowed_client_names: tuple[str, ...] = field(default=(), metadata=meta(
        "Client certificate names admitted", check=_client_names))
    """DNS SANs or CN a client certificate must carry (one of); empty = any it signed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthSettings:
    """Credentials required to post events and read /metrics (section `auth`)."""

    bearer_tokens_file: str = field(default="", metadata=meta(
        "File of accepted tokens, one per line"))
    """Tokens accepted as `Authorization: Bearer` or as a Basic password; re-read on change."""
    hmac_secret_file: str = field(default="", metadata=meta(
        "File holding the HMAC signing secret"))
    """Secret for `X-Talon-Signature` (trailing newline stripped); re-read on change."""
    max_skew_seconds: int = field(default=300, metadata=meta(
        "Max age (and clock skew) of a signature (s)", min_=1, max_=86400))
    """Signatures older or newer than this are refused, as are replays within it."""
    open_metrics: bool = field(default=False, metadata=meta(
        "Serve /metrics without credentials"))
    """Let /metrics be scraped without credentials (/healthz is always open)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerSettings:
    """The append-only, hash-chained action ledger (section `ledger`); no path = off."""

    path: str = field(default="", metadata=meta("Action ledger file (JSON Lines)"))
    """File every action outcome is appended to; rotated files are `path.1`, `path.2`..."""
    hmac_key_file: str = field(default="", metadata=meta(
        "File holding the ledger's HMAC key"))
    """With it, each line carries `mac`, an HMAC-SHA256 of the line (trailing newline of
    the file stripped), so that the chain cannot be recomputed without the key."""
    max_bytes: int = field(default=104857600, metadata=meta(
        "Ledger file size before rotation (bytes)", min_=4096))
    """A line that would take the file past this size starts the next file."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything Talon reads at start-up; built by `load`, never mutated."""

    listen_address: str = field(default="0.0.0.0", metadata=meta(  # noqa: S104
        "HTTP listen address"))
    """Address the HTTP server binds."""
    listen_port: int = field(default=2803, metadata=meta(
        "HTTP listen port (0 = any free)", min_=0, max_=65535))
    """Port the HTTP server binds; 0 picks a free port."""
    rules_files: tuple[str, ...] = field(default=(), metadata=meta("Rules files"))
    """Rules files, later ones override earlier ones; empty = the CLI's default."""
    watch_rules: bool = field(default=True, metadata=meta("Reload rules when they change"))
    """Reload the rules when a file changes."""
    print_all_events: bool = field(default=False, metadata=meta("Log every received event"))
    """Log every received event, not only the matching ones."""
    kubeconfig: str = field(default="", metadata=meta("Kubeconfig file (outside k8s)"))
    """Kubeconfig path, when running outside Kubernetes; empty = in-cluster."""
    log_format: str = field(default="color", metadata=meta(
        "Log format: text, color, json", check=_log_format))
    """`text`, `color` or `json` (stored lower-case)."""
    dry_run: bool = field(default=False, metadata=meta("Log actions, run none"))
    """Match and log, but run no action."""
    notify_dry_run: bool = field(default=False, metadata=meta(
        "Also notify dry-run actions"))
    """Send each dry-run action's notification too, with status `dry_run` (to test the
    notifiers without touching the cluster); by default dry-run actions notify nobody."""
    workers: int = field(default=8, metadata=meta("Event worker threads", min_=1, max_=256))
    """Threads running actions."""
    queue_size: int = field(default=1000, metadata=meta("Event queue capacity", min_=1))
    """Events waiting for a worker (queued, or held behind an earlier event for the same
    pod); beyond it POST / answers 503."""
    queue_max_bytes: int = field(default=268435456, metadata=meta(
        "Event queue capacity (bytes)", min_=1024))
    """Bytes of the events waiting for a worker (each counts its request body); beyond it
    POST / answers 503."""
    max_body_bytes: int = field(default=1048576, metadata=meta(
        "Max request body (bytes)", min_=1024))
    """Largest accepted request body."""
    max_connections: int = field(default=256, metadata=meta("Max open connections", min_=1))
    """Concurrent HTTP connections served."""
    read_timeout_seconds: float = field(default=10.0, metadata=meta(
        "HTTP read timeout (s)", gt=0))
    """Time allowed to read one request."""
    idle_timeout_seconds: float = field(default=60.0, metadata=meta(
        "HTTP keep-alive idle timeout (s)", gt=0))
    """Idle time before a kept-alive connection is closed."""
    action_timeout_seconds: float = field(default=120.0, metadata=meta(
        "Timeout of one action (s)", gt=0))
    """Time allowed to one action."""
    shutdown_timeout_seconds: float = field(default=30.0, metadata=meta(
        "Grace period on shutdown (s)", min_=0))
    """Time given to queued work on shutdown."""
    notifier_workers: int = field(default=4, metadata=meta("Notifier threads", min_=1))
    """Threads sending notifications."""
    notifier_queue_size: int = field(default=1000, metadata=meta(
        "Notification queue capacity", min_=1))
    """Notifications waiting for a thread; beyond it they are dropped and counted."""
    notifier_timeout_seconds: float = field(default=10.0, metadata=meta(
        "Timeout of one notification (s)", gt=0))
    """Time allowed to one notification attempt."""
    notifier_retries: int = field(default=3, metadata=meta("Notification retries", min_=0))
    """Extra attempts after a failed notification."""
    reload_interval_seconds: float = field(default=1.0, metadata=meta(
        "Rules poll interval (s)", gt=0))
    """How often the rules files are checked for changes."""
    plugins: tuple[str, ...] = field(default=(), metadata=meta(
        "Extra plug-in modules or .py files"))
    """Importable module names or .py paths loaded after the built-in plug-ins."""
    otel: OtelSettings = field(default_factory=OtelSettings)
    """OpenTelemetry export."""
    deduplication: DedupSettings = field(default_factory=DedupSettings)
    """De-duplication and leader election."""
    journal: JournalSettings = field(default_factory=JournalSettings)
    """The durable event journal."""
    default_notifiers: tuple[str, ...] = field(default=(), metadata=meta(
        "Notifiers used by every rule", check=_lower_items))
    """Notifiers enabled for every rule (names lower-cased)."""
    notifiers: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: types.MappingProxyType({}))
    """Raw settings per notifier name; the notifier plug-ins validate them."""
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    """Kubernetes API client limits."""
    aws: AwsSettings = field(default_factory=AwsSettings)
    """AWS credentials."""
    minio: MinioSettings = field(default_factory=MinioSettings)
    """MinIO connection."""
    gcp: GcpSettings = field(default_factory=GcpSettings)
    """Google Cloud access."""
    tls: TlsSettings = field(default_factory=TlsSettings)
    """TLS on the listener."""
    auth: AuthSettings = field(default_factory=AuthSettings)
    """Authentication of ingest and /metrics."""
    containment: ContainmentSettings = field(default_factory=ContainmentSettings)
    """Expiry of changes made with a ttl."""
    governor: GovernorSettings = field(default_factory=GovernorSettings)
    """Budgets of disruptive actions."""
    protected: ProtectedSettings = field(default_factory=ProtectedSettings)
    """Workloads disruptive actions leave alone."""
    ledger: LedgerSettings = field(default_factory=LedgerSettings)
    """The action ledger."""

    def secrets(self, registry: Registry | None = None) -> frozenset[str]:
        """The secret values present (keys, passwords, tokens), for the logger to mask.

        With `registry`, every notifier setting its plug-in declares secret counts too.
        """
        found: set[str] = set()
        _mask(params.to_plain(self), (), found, _declared(registry))
        return frozenset(found)


def redacted(settings: Settings, registry: Registry | None = None) -> dict[str, Any]:
    """`settings` as plain data (dicts, lists, scalars) with every secret replaced by ***."""
    result: dict[str, Any] = _mask(params.to_plain(settings), (), set(), _declared(registry))
    return result


# --- schema, derived from the dataclasses -------------------------------------------------


_FIELDS: tuple[Field, ...] = tuple(fields_of(Settings, skip=(_NOTIFIERS,)))
_BY_NAME: dict[str, Field] = {name: f for f in _FIELDS for name in (f.key, *f.aliases)}
_SECTIONS = frozenset(name.split(".")[0] for name in _BY_NAME if "." in name)
_KNOWN = sorted({f.key for f in _FIELDS} | _SECTIONS | {_NOTIFIERS})


def _describe(f: Field) -> str:
    also = f"; also {', '.join(f.env[1:])}" if len(f.env) > 1 else ""
    return f.help + also


ENV_VARS: tuple[tuple[str, str, Any, str], ...] = (
    *((f.key, f.env[0], f.default, _describe(f)) for f in _FIELDS),
    ("notifiers.<name>.<setting>", "NOTIFIERS_<NAME>_<SETTING>", None,
     "One notifier setting (string value)"),
)
"""(dotted key, environment variable, default, description) for every setting."""


# --- sources -------------------------------------------------------------------------------

Notifiers = dict[str, dict[str, Any]]


@dataclass(slots=True)
class _Layer:
    """What one source contributed: typed leaf values and raw notifier settings."""

    values: dict[str, Any] = field(default_factory=dict)
    notifiers: Notifiers = field(default_factory=dict)


def _suggest(dotted: str) -> str:
    near = difflib.get_close_matches(dotted, _KNOWN, n=1, cutoff=0.6)
    return f" (did you mean '{near[0]}'?)" if near else ""


def _put(layer: _Layer, f: Field, value: Any, where: str, problems: list[str],
         *, from_env: bool = False) -> None:
    try:
        layer.values[f.key] = convert(f, value, from_env=from_env)
    except ValueError as exc:
        problems.append(f"{where}: {exc}")


class _FileReader:
    """Walks the parsed YAML of one file into a `_Layer`, collecting problems."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path, self.problems = path, problems
        self.layer = _Layer()
        self.seen: dict[str, str] = {}

    def where(self, node: Mapping[Any, Any], key: Any, dotted: str) -> str:
        line = node.line_of(key) if isinstance(node, yamlio.LineDict) else None
        return f"{self.path}:{line}: {dotted}" if line else f"{self.path}: {dotted}"

    def walk(self, node: Mapping[Any, Any], prefix: str = "") -> None:
        for key, value in node.items():
            dotted = prefix + str(key).lower()
            where = self.where(node, key, dotted)
            if dotted == _NOTIFIERS:
                self.notifiers(value, where)
            elif dotted in _SECTIONS:
                self.section(value, where, dotted)
            elif dotted in _BY_NAME:
                self.leaf(_BY_NAME[dotted], value, where, dotted)
            else:
                self.problems.append(f"{where}: unknown key{_suggest(dotted)}")

    def section(self, value: Any, where: str, dotted: str) -> None:
        if isinstance(value, Mapping):
            self.walk(value, dotted + ".")
        elif value is not None:
            self.problems.append(f"{where}: expected a map, got {show(value)}")

    def leaf(self, f: Field, value: Any, where: str, dotted: str) -> None:
        if value is None:
            return
        if f.key in self.seen:
            self.problems.append(f"{where}: duplicate key (already set as '{self.seen[f.key]}')")
            return
        self.seen[f.key] = dotted
        _put(self.layer, f, value, where, self.problems)

    def notifiers(self, value: Any, where: str) -> None:
        if value is None:
            return
        if not isinstance(value, Mapping):
            self.problems.append(f"{where}: expected a map of notifiers, got {show(value)}")
            return
        for key, settings in value.items():
            name = str(key).lower()
            self.notifier(name, settings, self.where(value, key, f"{_NOTIFIERS}.{name}"))

    def notifier(self, name: str, settings: Any, where: str) -> None:
        if name in self.layer.notifiers:
            self.problems.append(f"{where}: duplicate notifier")
        elif settings is not None and not isinstance(settings, Mapping):
            self.problems.append(f"{where}: expected a map of settings, got {show(settings)}")
        else:
            self.layer.notifiers[name] = self.settings(settings or {}, where)

    def settings(self, settings: Mapping[Any, Any], where: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in settings.items():
            name = str(key).lower()
            if name in out:
                self.problems.append(f"{where}.{name}: duplicate setting")
            elif value is not None:
                out[name] = params.to_plain(value)
        return out


def _read_file(path: str, problems: list[str]) -> Any:
    try:
        return yamlio.load_file(path)
    except FileNotFoundError:
        problems.append(f"{path}: configuration file not found")
    except yamlio.YamlError as exc:
        problems.append(str(exc))
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: cannot read the configuration file: {exc}")
    return None


def _file_layer(path: str | None, required: bool, problems: list[str]) -> _Layer:
    if path is None:
        if required:
            problems.append("a configuration file is required")
        return _Layer()
    data = _read_file(path, problems)
    reader = _FileReader(path, problems)
    if isinstance(data, Mapping):
        reader.walk(data)
    elif data is not None:
        problems.append(f"{path}: expected a map at the top level, got {show(data)}")
    return reader.layer


_ENV_NOTIFIERS = "NOTIFIERS_"


def _env_layer(env: Mapping[str, str], problems: list[str]) -> _Layer:
    """Env vars; an empty or blank value counts as unset, as viper does."""
    layer = _Layer()
    for f in _FIELDS:
        name = next((n for n in f.env if env.get(n, "").strip()), None)
        if name is not None:
            raw = env[name]
            _put(layer, f, raw, f"{name}={raw}", problems, from_env=True)
    for var in sorted(env):
        if var.upper().startswith(_ENV_NOTIFIERS) and env[var].strip():
            name, _, setting = var[len(_ENV_NOTIFIERS):].partition("_")
            if not name or not setting:
                problems.append(f"{var}: expected a name like NOTIFIERS_<NAME>_<SETTING>")
                continue
            layer.notifiers.setdefault(name.lower(), {})[setting.lower()] = env[var]
    return layer


def _override_layer(overrides: Mapping[str, Any], problems: list[str]) -> _Layer:
    """Command-line values, already typed; None means "flag not given"."""
    layer = _Layer()
    for key, value in overrides.items():
        if value is None:
            continue
        dotted = str(key).lower()
        where = f"{dotted} (command line)"
        parts = dotted.split(".")
        if parts[0] == _NOTIFIERS and len(parts) == 3 and all(parts):
            layer.notifiers.setdefault(parts[1], {})[parts[2]] = value
        elif dotted in _BY_NAME:
            _put(layer, _BY_NAME[dotted], value, where, problems)
        else:
            problems.append(f"{where}: unknown key{_suggest(dotted)}")
    return layer


# --- assembly ------------------------------------------------------------------------------


def _build(cls: type[Any], prefix: str, values: Mapping[str, Any],
           notifiers: Notifiers) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        if key == _NOTIFIERS:
            kwargs[f.name] = models.freeze(notifiers)
        elif dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], key + ".", values, notifiers)
        elif key in values:
            kwargs[f.name] = values[key]
    return cls(**kwargs)


def load(path: str | None, *, env: Mapping[str, str] | None = None,
         overrides: Mapping[str, Any] | None = None, required: bool = False) -> Settings:
    """Read `path` (YAML), then `env` (default os.environ), then `overrides` (dotted keys).

    Raises ConfigError listing every problem found in every source.
    """
    problems: list[str] = []
    layers = (_file_layer(path, required, problems),
              _env_layer(os.environ if env is None else env, problems),
              _override_layer(overrides or {}, problems))
    if problems:
        raise ConfigError(problems)
    values: dict[str, Any] = {}
    notifiers: Notifiers = {}
    for layer in layers:
        values.update(layer.values)
        for name, options in layer.notifiers.items():
            notifiers.setdefault(name, {}).update(options)
    settings: Settings = _build(Settings, "", values, notifiers)
    return settings


# --- secrets -------------------------------------------------------------------------------

_SECRET_FIELDS = frozenset({("aws", "access_key"), ("aws", "secret_key"),
                            ("minio", "access_key"), ("minio", "secret_key")})
_SECRET_SETTINGS = frozenset({"password", "api_key", "webhook_url", "token"})


Declared = Mapping[str, frozenset[str]]
"""Notifier name → the settings its plug-in declares secret (`PluginInfo.secrets`)."""


def _declared(registry: Registry | None) -> Declared:
    if registry is None:
        return {}
    return {p.info.name.lower(): frozenset(p.info.secrets) for p in registry.all("notifier")}


def _is_secret(path: tuple[str, ...], declared: Declared) -> bool:
    """Whether the value at `path` is secret; a declared mapping (custom_headers) is
    secret value by value."""
    if path in _SECRET_FIELDS:
        return True
    if len(path) < 3 or path[0] != _NOTIFIERS:
        return False
    setting = path[2].lower()
    if len(path) == 3 and setting in _SECRET_SETTINGS:
        return True
    if len(path) == 4 and setting == "custom_headers" and path[3].lower() == "authorization":
        return True
    return len(path) in (3, 4) and setting in declared.get(path[1].lower(), ())


def _mask(node: Any, path: tuple[str, ...], found: set[str], declared: Declared) -> Any:
    """Copy of plain `node` with secrets masked; their values are added to `found`."""
    if isinstance(node, dict):
        return {key: _mask(value, (*path, str(key)), found, declared)
                for key, value in node.items()}
    if _is_secret(path, declared) and node not in (None, ""):
        found.add(str(node))
        return MASK
    return node
