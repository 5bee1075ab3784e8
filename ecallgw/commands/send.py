"""``ecallgw send``: send one MSD to a running gateway, as a provider would (a first incident in minutes).

The MSD is hex (as ``ecallgw encode`` prints it), a JSON file (as ``ecallgw decode`` prints it), or,
by default, a built-in sample (a crash near Munich, sample VIN ``WM9VDSVDSYA123456``). Its timestamp
is set to now unless ``--keep-timestamp`` (triage treats an MSD older than ``triage.msd_stale_s`` as
stale). It goes in the msgpack envelope of docs/interfaces.md:

- ``mqtt://HOST:PORT``: published with QoS 1 to ``{prefix}/{tps}/{vehicle}/msd``; the PUBACK is the
  broker's, the gateway's decision is not visible on this path (see the operator API).
- ``http://HOST:PORT`` (or https): POSTed to ``/v1/ecall/{tps}/{vehicle}/msd`` with a provider token
  for ``{tps}``; the gateway's answer (incident id, outcome) is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

HELP = "send one MSD (hex, JSON file, or a built-in sample) with a fresh timestamp to a running gateway"

SAMPLE_HEX = "015c0681d54970d65c3597ca0420c41464583ade68ac52e9bb8413f149c07414fb414f6010180813e82181823230"
"""A public v2 MSD: automatic activation, not a test call, two passengers, near 48.3 N 11.6 E."""


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the command's options."""
    parser.add_argument(
        "msd",
        nargs="?",
        metavar="HEX|FILE",
        help="the MSD as hex, or a JSON file in the form `ecallgw decode` prints (default: a sample)",
    )
    parser.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="the gateway: mqtt://HOST:PORT (its broker) or http(s)://HOST:PORT (its HTTP ingest)",
    )
    parser.add_argument("--tps", default="acme", help="provider name in the topic or path (default acme)")
    parser.add_argument("--vehicle", default="car-1", help="the provider's vehicle key (default car-1)")
    parser.add_argument("--call-id", help="call id (default: a fresh one)")
    parser.add_argument("--token", help="HTTP: the provider's bearer token (or --token-file)")
    parser.add_argument("--token-file", metavar="FILE", help="HTTP: a file holding the token")
    parser.add_argument(
        "--topic-prefix", default="ecall/v1", help="MQTT: mqtt.topic_prefix (default ecall/v1)"
    )
    parser.add_argument(
        "--keep-timestamp", action="store_true", help="send the MSD's own timestamp instead of now"
    )


def _msd(arg: str | None, fresh: bool) -> bytes:
    """The MSD's UPER bytes, its timestamp set to now when ``fresh``; ValueError with one line if bad."""
    from ecallgw.codecs import msd
    from ecallgw.errors import DecodeError, EncodeError

    text = SAMPLE_HEX if arg is None else arg
    try:
        if arg is not None and Path(arg).is_file():
            value = msd.from_json_dict(json.loads(Path(arg).read_bytes()))
        else:
            hex_text = "".join(text.split())
            value = msd.decode(bytes.fromhex(hex_text[2:] if hex_text[:2].lower() == "0x" else hex_text))
        if fresh:
            tree = msd.to_json_dict(value)
            tree["msd"]["msdStructure"]["timestamp"] = int(time.time())
            value = msd.from_json_dict(tree)
        data: bytes = msd.encode(value)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {arg}: {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"{arg!r} is neither a file nor hex") from exc
    except (DecodeError, EncodeError) as exc:
        raise ValueError(f"not an MSD: {exc}") from exc
    return data


def run(args: argparse.Namespace) -> int:
    """Send; 0 once acknowledged (HTTP: 2xx), 1 when refused or unreachable, 2 on a bad argument."""
    import asyncio

    import msgpack

    try:
        data = _msd(args.msd, not args.keep_timestamp)
        token = args.token or ""
        if args.token_file:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
    except (ValueError, OSError) as exc:
        print(f"ecallgw send: {exc}", file=sys.stderr)
        return 2
    url = urlsplit(args.to)
    call_id = args.call_id or f"send-{uuid.uuid4().hex[:12]}"
    envelope = msgpack.packb({"call_id": call_id, "msd": data, "sent_at": time.time()}, use_bin_type=True)
    if url.scheme == "mqtt":
        return asyncio.run(_mqtt(args, url.hostname or "127.0.0.1", url.port or 1883, envelope, call_id))
    if url.scheme in ("http", "https"):
        if not token:
            print("ecallgw send: HTTP needs the provider's token (--token or --token-file)", file=sys.stderr)
            return 2
        return asyncio.run(_http(args, envelope, token, call_id))
    print(f"ecallgw send: --to needs mqtt:// or http(s)://, got {args.to!r}", file=sys.stderr)
    return 2


async def _mqtt(args: argparse.Namespace, host: str, port: int, envelope: bytes, call_id: str) -> int:
    import aiomqtt

    topic = f"{args.topic_prefix}/{args.tps}/{args.vehicle}/msd"
    try:
        async with aiomqtt.Client(host, port, identifier=f"ecallgw-send-{uuid.uuid4().hex[:8]}") as client:
            await client.publish(topic, envelope, qos=1)
    except aiomqtt.MqttError as exc:
        print(f"ecallgw send: mqtt://{host}:{port}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"sent": "mqtt", "topic": topic, "call_id": call_id, "acknowledged_by": "broker"}))
    return 0


async def _http(args: argparse.Namespace, envelope: bytes, token: str, call_id: str) -> int:
    import aiohttp

    url = f"{args.to.rstrip('/')}/v1/ecall/{args.tps}/{args.vehicle}/msd"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/msgpack"}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
            http.post(url, data=envelope, headers=headers) as resp,
        ):
            body = await resp.text()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        print(f"ecallgw send: {url}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    try:
        answer: object = json.loads(body)
    except json.JSONDecodeError:
        answer = body[:200]
    print(json.dumps({"sent": "http", "status": status, "call_id": call_id, "answer": answer}))
    return 0 if 200 <= status < 300 else 1
