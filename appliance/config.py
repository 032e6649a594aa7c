"""Appliance configuration (`appliance.yaml`): one pydantic model per subsystem.

Every key has a safe default, so an empty file runs the embedded default. Secrets come
from the environment (the `*_env` keys name the variable), never from the file.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from appliance.core.errors import ConfigError

Network = Annotated[str, Field(description="an IPv4/IPv6 network in CIDR form")]

# Loopback and private LAN ranges: a fresh box answers softphones on its own network and
# nothing from the internet until the admin names a carrier's ranges.
DEFAULT_TRUNK_SOURCES = ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]


# Carriers' published signalling networks, for `trunks: [{preset: NAME}]`. Copied by hand from
# the carrier's own page, whose address and the day it was read are beside each list, so that
# anyone can check it again (docs/TWILIO.md says how). A preset fills in only what the admin
# left out: `sources:` beside it replaces the list (to narrow it to a region, or to follow a
# change the carrier published after this was written).
TRUNK_PRESETS: dict[str, list[str]] = {
    # "IP Addresses for Elastic SIP Trunking Services", "Regional signaling IP gateways", every
    # edge location (Virginia, Oregon, Ireland, Frankfurt, Tokyo, Singapore, Sydney, São Paulo):
    # https://www.twilio.com/docs/sip-trunking/ip-addresses (page dated 2026-03-09, read 2026-12-01).
    "twilio": ["54.172.60.0/30", "54.244.51.0/30", "54.171.127.192/30", "35.156.191.128/30",
               "54.65.63.192/30", "54.169.127.128/30", "54.252.254.64/30", "177.71.206.192/30"],
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _absolute_path(value: Path | None) -> Path | None:
    # Relative to what? The process's directory is not the YAML file's.
    if value is not None and not value.is_absolute():
        raise ValueError("must be an absolute path")
    return value


def read_password(where: str, env: str | None, file: Path | None, file_key: str = "password_file") -> str | None:
    """A secret from the variable `env` or the 0600 `file`; a file anyone else can read is refused.

    `where` names the setting in the errors (e.g. "trunk carrier", "transfers"), `file_key` the file's key.
    """
    if file is None:
        return os.environ.get(env) if env else None
    if env:
        raise ConfigError(f"{where}: set password_env or {file_key}, not both")
    try:
        mode = file.stat().st_mode
        if mode & 0o077:
            raise ConfigError(f"{where}: {file_key} {file} is readable or writable by group or others "
                              f"(mode {mode & 0o777:o}); chmod 600 it")
        # A trailing newline is the editor's, not the secret's.
        return file.read_text().rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"{where}: {file_key} {file}: cannot read: {exc.strerror}") from exc


class TrunkConfig(_Model):
    preset: str | None = Field(None, description="a carrier whose published signalling networks fill in sources "
                               f"(and name, if unset): {', '.join(TRUNK_PRESETS)}. sources beside it replace "
                               "the preset's list (docs/TWILIO.md)")
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="names the trunk in logs and call records; "
                      "with a preset, defaults to the preset's name")
    sources: list[Network] = Field(default_factory=list,
                                   description="networks its SIP may come from (IP ACL); others get 403. "
                                   "Empty with a username: any network whose INVITEs authenticate")
    username: str | None = Field(None,
                                 description="digest user: the edge challenges the trunk's INVITEs (407) and admits "
                                 "them only with this user and the password from password_env or password_file; "
                                 "with sources, both must match")
    password_env: str | None = Field(None, description="environment variable holding the digest password")
    password_file: Path | None = Field(None, description="absolute path of a file holding the digest password, "
                                       "readable by its owner only (mode 0600), else the box refuses to start")
    numbers: list[str] = Field(default_factory=list, description="numbers delivered; empty = any")

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("preset") is None:
            return data
        preset = data["preset"]
        if preset not in TRUNK_PRESETS:
            # _known_preset reports it at trunks.N.preset; a stand-in name keeps "name: Field
            # required" from burying that one line under a second, misleading one.
            return {"name": "unknown-preset"} | data
        # What the admin wrote wins: the preset only fills the gaps.
        return {"name": preset, "sources": list(TRUNK_PRESETS[preset])} | data

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        if value is not None and value not in TRUNK_PRESETS:
            raise ValueError(f"unknown trunk preset {value!r}; known presets: {', '.join(TRUNK_PRESETS)}")
        return value

    @field_validator("sources")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for net in value:
            ipaddress.ip_network(net, strict=False)
        return value

    _absolute = field_validator("password_file")(_absolute_path)

    @property
    def password(self) -> str | None:
        """The digest password, read when the edge is configured."""
        return read_password(f"trunk {self.name}", self.password_env, self.password_file)


class SipConfig(_Model):
    listen_host: str = Field("0.0.0.0", description="address the SIP edge (Kamailio) listens on")
    port: int = Field(5060, description="SIP port of the edge (UDP)")
    media_address: str | None = Field(None, description="address put in SDP; default: the host's")
    workers: int = Field(2, ge=1, le=64, description="pjsua2 worker processes behind the edge")
    calls_per_worker: int = Field(4, ge=1, le=4, description="the pjsua2 wheel's compiled-in limit is 4")
    worker_base_port: int = Field(5100, description="loopback SIP port of worker 1; worker N uses base + N - 1")
    rtp_port_start: int = Field(20000, ge=1,
                                description="first RTP port; each worker takes rtp_ports_per_worker from here on")
    rtp_ports_per_worker: int = Field(100, description="UDP ports of each worker's block: RTP and RTCP of a call "
                                      "take two; at least 2 × calls_per_worker and 4 (twice that "
                                      "with transfers.username), and more keeps a long call's ports clear of pjsua's "
                                      "round-robin reuse")
    poll_ms: int = Field(100, ge=1, le=1000, description="longest a worker's SIP thread sleeps between events")
    flood_requests: int = Field(32, description="INVITEs per source per 2 s before pike drops")
    retry_after_s: int = Field(5, description="Retry-After of the 503 sent when every worker is full")
    edge_memory_mb: int = Field(64, description="Kamailio's shared memory")


class HttpConfig(_Model):
    host: str = Field("127.0.0.1", description="address of the API, console and /metrics")
    port: int = 8080


class IceServer(_Model):
    urls: list[str] = Field(description="stun:HOST:PORT or turn:HOST:PORT?transport=udp|tcp")
    username: str | None = None
    credential_env: str | None = Field(None, description="environment variable holding the TURN credential")


class ConsoleConfig(_Model):
    """The operator and supervisor console: HTTPS (browsers give microphones to secure pages only)."""

    host: str = Field("0.0.0.0", description="address of the HTTPS console and API for browsers on the LAN")
    port: int = Field(8443, description="HTTPS port of the console")
    cert_file: Path | None = Field(None, description="the admin's TLS certificate (PEM); unset: a self-signed one "
                                   "is generated on first start and kept in data_dir")
    key_file: Path | None = Field(None, description="the certificate's private key (PEM, mode 0600)")
    ice_servers: list[IceServer] = Field(default_factory=list,
                                         description="STUN/TURN for operators behind NAT; none is needed on a LAN")
    rtc_workers: int = Field(1, ge=0, le=16, description="WebRTC gateway processes (browser legs); 0: no console audio")
    sessions_per_worker: int = Field(32, ge=1, le=128, description="browser sessions one WebRTC process holds")
    operator_lost_s: float = Field(5.0, gt=0, le=60, description="how long a call waits for an operator's browser "
                                   "to come back before the caller returns to the head of the queue")
    login_attempts: int = Field(5, ge=1, le=100, description="failed logins per user (and per address) per window "
                                "before login answers 429")
    login_window_s: float = Field(300.0, gt=0, description="the window of login_attempts, in seconds")


class AuthConfig(_Model):
    api_key: str = Field("switchboard", description="the key id in the access tokens the box signs")
    api_secret_env: str = Field("SWITCHBOARD_API_SECRET", description="environment variable with the signing secret; "
                                "unset: one is generated once and kept in data_dir/api_secret")


class WebhooksConfig(_Model):
    # Loopback only by default: the example support flow's account lookup (flows/support.yaml).
    allowed: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:8765/"],
        description="URL prefixes flows and persona tools may call: scheme://host[:port]/path, host may be *.domain",
    )


EventName = Literal["call_started", "call_answered", "call_ended", "escalated", "operator_joined", "operator_left",
                    "recording_ready", "transcript_ready", "voicemail_left"]
EVENT_NAMES: tuple[EventName, ...] = get_args(EventName)


class EventWebhookConfig(_Model):
    url: str = Field(description="where events are POSTed; must lie under webhooks.allowed")
    events: list[EventName] = Field(default_factory=lambda: list(EVENT_NAMES),
                                    description="which events this receiver gets (all by default)")


class EventsConfig(_Model):
    webhooks: list[EventWebhookConfig] = Field(
        default_factory=list,
        description="receivers of call events, signed as LiveKit webhooks (a JWT with the body's SHA-256)")
    give_up_after_s: float = Field(86400.0, gt=0, description="an event not delivered within this is dropped "
                                                               "(a log line and switchboard_webhooks_given_up_total)")
    retry_max_s: float = Field(60.0, gt=0, description="longest wait between two attempts (backoff doubles up to it)")
    timeout_s: float = Field(5.0, gt=0, description="how long one attempt may take")
    public_api_url: str | None = Field(None, description="base URL of the API as receivers reach it, for "
                                                          "recordings' download URLs; unset: the http listener's")


class TransfersConfig(_Model):
    # Toll-fraud protection: a flow can only send callers where the admin listed.
    allowed: list[str] = Field(default_factory=list,
                               description="sip:USER@HOST (USER may use * and ?) or numbers like +1555*")
    outbound_proxy: str | None = Field(
        None, pattern=r"^sips?:[A-Za-z0-9.-]+(:\d{1,5})?$",
        description="bridge transfers to numbers go to sip:NUMBER@ this host (a carrier's termination, "
                    "e.g. sip:example.pstn.twilio.com); unset: numbers cannot be bridged",
    )
    # What the destination's phone shows. The caller's From is whatever the caller wrote, never
    # authenticated: passing it to a carrier by default would let anyone spoof any number through
    # us. The number the caller dialled is one of ours (admission only takes configured numbers).
    caller_id: str = Field(
        "called", pattern=r"^(called|caller|\+?[0-9]{3,15})$",
        description="From user of a bridge transfer's outbound call: 'called' (the box's number the caller dialled), "
                    "a fixed number, or 'caller' to pass on the caller's unverified number (a carrier may refuse it)",
    )
    # The carrier's termination asks for a password (Twilio: a credential list on the trunk). The
    # workers answer its 401/407 challenges only on calls to outbound_proxy's host, so the
    # credentials never go to a transfers.allowed destination elsewhere.
    username: str | None = Field(None, description="digest user for the 401/407 challenges of outbound_proxy "
                                 "(the carrier's termination) on bridge transfers; needs outbound_proxy and "
                                 "password_env or password_file")
    password_env: str | None = Field(None, description="environment variable holding that digest password")
    password_file: Path | None = Field(None, description="absolute path of a file holding that digest password, "
                                       "readable by its owner only (mode 0600), else the box refuses to start")

    _absolute = field_validator("password_file")(_absolute_path)

    @model_validator(mode="after")
    def _credentials_need_a_proxy(self) -> TransfersConfig:
        if self.username is None and (self.password_env or self.password_file):
            raise ValueError("a password without username: set transfers.username too")
        if self.username is not None and not self.outbound_proxy:
            raise ValueError("username is for the carrier's termination: set transfers.outbound_proxy too")
        return self

    @property
    def password(self) -> str | None:
        """The digest password, read when the gateway starts."""
        return read_password("transfers", self.password_env, self.password_file)


class PersonasConfig(_Model):
    workers: int = Field(1, ge=0, le=32, description="persona worker processes (0: no AI personas)")
    sessions_per_worker: int = Field(4, ge=1, le=32, description="persona calls one worker process holds")
    # Every 100 ms here is 100 ms more before each answer. A pause inside a sentence is longer
    # than this; the persona's words-so-far check (`turns.incomplete_pause`, personas/turns.py)
    # keeps those turns open, so the silence can be short (docs/BENCHMARKS.md, "Persona turns").
    # silero counts silence in 32 ms windows: 0.06 is two of them, and it reports the end of
    # speech about 0.12 s after the speech (measured on tests/support/spoken_requests.py's audio).
    endpointing_s: float = Field(0.06, ge=0.05, le=3.0,
                                 description="silence after which the caller's speech has ended (silero's); a turn "
                                 "whose words make a whole request ends there (the persona's turns.incomplete_pause "
                                 "and numbers.pause hold the others open)")


class RecordingFormat(StrEnum):
    """How a finished call's recording is stored; during the call it is always the crash-safe WAV."""

    WAV = "wav"
    OGG_OPUS = "ogg_opus"
    FLAC = "flac"


class RecordingConfig(_Model):
    format: RecordingFormat = Field(RecordingFormat.WAV,
                                    description="how recordings and voicemail are kept once the call ends: wav, "
                                    "ogg_opus (lossy, smallest) or flac (lossless); converted from the WAV written "
                                    "during the call, which is removed only once the converted file is verified")
    opus_bitrate: int = Field(24000, ge=6000, le=256000,
                              description="bits per second of an ogg_opus recording (both channels together)")


class TwilioConfig(_Model):
    """Twilio Programmable Voice: numbers bought on Twilio reach the box over HTTPS (docs/TWILIO.md)."""

    enabled: bool = Field(False, description="answer /twilio/voice, /twilio/status and the /twilio/media WebSocket")
    public_url: str | None = Field(
        None, pattern=r"^https://[A-Za-z0-9.-]+(:\d{1,5})?(/[^\s?#]*)?$",
        description="the https base URL Twilio calls (https://HOST[:PORT][/PATH]): signatures are checked against it, "
                    "not the URL the box sees behind a TLS-terminating proxy; required when enabled",
    )
    mode: Literal["stream", "sip"] = Field(
        "stream", description="stream: the call's audio comes over a Media Streams WebSocket (no SIP port open); "
                              "sip: the voice webhook answers <Dial><Sip> to sip_host",
    )
    sip_host: str | None = Field(None, pattern=r"^[A-Za-z0-9.-]+(:\d{1,5})?$",
                                 description="mode sip: the box's public SIP host[:port] Twilio dials")
    account_sid: str | None = Field(None, pattern=r"^AC[0-9a-fA-F]{32}$",
                                    description="the Twilio account (AC…) whose REST API ends calls the flow hangs up")
    auth_token_env: str | None = Field("TWILIO_AUTH_TOKEN",
                                       description="environment variable holding the account's auth token")
    auth_token_file: Path | None = Field(None, description="absolute path of a file holding the auth token, mode "
                                         "0600 (instead of auth_token_env)")
    numbers: list[str] = Field(default_factory=list,
                               description="dialled numbers served over Twilio (each routed by `numbers`); empty = any")
    api_base_url: str = Field("https://api.twilio.com", pattern=r"^https?://[^\s/]+$",
                              description="Twilio's REST API; another only for a stand-in in tests")
    stream_token_ttl_s: float = Field(30.0, gt=0, le=300,
                                      description="how long a stream token from a signed voice webhook stays good")
    max_streams: int = Field(64, ge=1, le=256, description="Media Streams calls held at once; more are refused")

    @field_validator("auth_token_file")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError("must be an absolute path")
        return value

    def auth_token(self) -> str:
        """The auth token that signs Twilio's webhooks and opens its REST API; ConfigError when there is none."""
        if self.auth_token_file is not None:
            token = read_password("twilio", None, self.auth_token_file, file_key="auth_token_file")
        else:
            token = os.environ.get(self.auth_token_env) if self.auth_token_env else None
        if not token:
            raise ConfigError(f"twilio: no auth token (set {self.auth_token_env or 'auth_token_env'} "
                              "or twilio.auth_token_file)")
        return token

    def check(self) -> None:
        """What `enabled` needs, said at start-up rather than at the first call."""
        if not self.enabled:
            return
        if self.public_url is None:
            raise ConfigError("twilio.public_url is required when twilio.enabled (the https URL Twilio calls)")
        if self.mode == "sip" and self.sip_host is None:
            raise ConfigError("twilio.sip_host is required in twilio.mode sip")
        if self.account_sid is None:
            raise ConfigError("twilio.account_sid is required when twilio.enabled (hang-ups go through its API)")
        self.auth_token()


class Config(_Model):
    sip: SipConfig = Field(default_factory=SipConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    trunks: list[TrunkConfig] = Field(
        default_factory=lambda: [TrunkConfig(name="lan", sources=list(DEFAULT_TRUNK_SOURCES))],
        description="where calls may come from; the default takes loopback and private networks only",
    )
    numbers: dict[str, str] = Field(default_factory=lambda: {"100": "default"}, description="number → flow")
    webhooks: WebhooksConfig = Field(default_factory=WebhooksConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    personas: PersonasConfig = Field(default_factory=PersonasConfig)
    transfers: TransfersConfig = Field(default_factory=TransfersConfig)
    recording: RecordingConfig = Field(default_factory=RecordingConfig)
    twilio: TwilioConfig = Field(default_factory=TwilioConfig)
    flows_reload_s: float = Field(1.0, ge=0, description="how often flows/ is checked for edits; 0 = never")
    data_dir: Path = Field(Path("data"), description="SQLite database, hub socket, edge config, generated secret, "
                                                       "the running appliance's lock")
    recordings_dir: Path = Field(Path("recordings"), description="call recordings and voicemail")
    flows_dir: Path = Field(Path("flows"), description="flows, queues.yaml, personas/ and tests/")

    @model_validator(mode="after")
    def _rtp_blocks_fit(self) -> Config:
        sip = self.sip
        # A dial account (transfers.username) takes half of each worker's block for the calls it places.
        accounts = 2 if self.transfers.username else 1
        # Two ports per call slot, and never fewer than two pairs: pjsua reads a range of 0 as none.
        need = accounts * max(4, 2 * sip.calls_per_worker)
        if sip.rtp_ports_per_worker < need:
            each = " on each of 2 accounts" if accounts > 1 else ""
            raise ValueError(f"sip.rtp_ports_per_worker must be at least {need} (RTP and RTCP for "
                             f"{sip.calls_per_worker} calls per worker{each}), not {sip.rtp_ports_per_worker}")
        end = sip.rtp_port_start + sip.workers * sip.rtp_ports_per_worker - 1
        if end > 65535:
            raise ValueError(f"the RTP ports of {sip.workers} workers end at {end}, beyond 65535: lower "
                             "sip.rtp_port_start or sip.rtp_ports_per_worker")
        return self

    @property
    def hub_socket(self) -> Path:
        return self.data_dir / "hub.sock"

    @property
    def database(self) -> Path:
        return self.data_dir / "switchboard.db"

    def api_secret(self) -> str:
        """The signing secret: from the environment, else generated once and kept in data_dir."""
        env = os.environ.get(self.auth.api_secret_env)
        if env:
            return env
        path = self.data_dir / "api_secret"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            # 0600 from the first byte: write-then-chmod leaves a moment where anyone may read it.
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                pass  # another process made it first; read theirs
            else:
                with os.fdopen(fd, "w") as file:
                    file.write(secrets.token_urlsafe(32))
        return path.read_text().strip()

    def secret_env_names(self) -> list[str]:
        """Environment variables that hold secrets, to keep out of child processes' environments."""
        return ([self.auth.api_secret_env] + [t.password_env for t in self.trunks if t.password_env]
                + ([self.transfers.password_env] if self.transfers.password_env else [])
                + [s.credential_env for s in self.console.ice_servers if s.credential_env]
                + ([self.twilio.auth_token_env] if self.twilio.auth_token_env else []))

    def trunk(self, name: str) -> TrunkConfig | None:
        return next((t for t in self.trunks if t.name == name), None)

    @classmethod
    def load(cls, path: Path | None) -> Config:
        raw: object = {}
        if path is not None:
            try:
                raw = yaml.safe_load(path.read_text()) or {}
            except OSError as exc:
                raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        try:
            config = cls.model_validate(raw)
        except ValidationError as exc:
            lines = [f"{path}: {_key(e['loc'])}{e['msg']}" for e in exc.errors()]
            raise ConfigError("\n".join(lines)) from exc
        if path is not None:
            base = path.parent
            for key in ("data_dir", "recordings_dir", "flows_dir"):
                value = getattr(config, key)
                if not value.is_absolute():
                    setattr(config, key, (base / value).resolve())
        return config


def _key(loc: tuple[int | str, ...]) -> str:
    """"sip.workers: " before a key's error; nothing before a check across sections, whose message names its keys."""
    return ".".join(str(part) for part in loc) + ": " if loc else ""


def reference() -> str:
    """docs/CONFIG.md: every key of appliance.yaml with its default, from the models above."""
    import json
    import typing

    def default(field: typing.Any) -> str:
        value = field.get_default(call_default_factory=True)
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        elif isinstance(value, list):
            value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
        elif isinstance(value, Path):
            value = str(value)
        return "required" if field.is_required() else f"`{json.dumps(value)}`"

    def row(key: str, field: typing.Any) -> str:
        description = (field.description or "").replace("|", "\\|")
        return f"| `{key}` | {default(field)} | {description} |"

    lines = ["# appliance.yaml: every key and its default", "",
             "Generated from `appliance/config.py` (`python -m appliance.config > docs/CONFIG.md`); a test",
             "keeps it in step. Relative paths are taken from the file's directory. An empty file is the",
             "embedded default.", "", "| key | default | what it is |", "|---|---|---|"]
    for name, field in Config.model_fields.items():
        annotation = field.annotation
        item = typing.get_args(annotation)[0] if typing.get_origin(annotation) is list else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines += [row(f"{name}.{key}", sub) for key, sub in annotation.model_fields.items()]
        else:
            lines.append(row(name, field))
            if isinstance(item, type) and issubclass(item, BaseModel):
                lines += [row(f"{name}[].{key}", sub) for key, sub in item.model_fields.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
