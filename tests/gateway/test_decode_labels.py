"""Decode errors in metrics: the ``reason`` label is a bounded set the sender cannot extend."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import msgpack
from hypothesis import given
from hypothesis import strategies as st

from ecallgw.codecs.envelope import ENVELOPE_KEYS
from ecallgw.errors import DecodeError
from ecallgw.gateway.pipeline import reason_label
from tests.gateway.harness import PROVIDER_TOKEN, gateway_config, running_gateway
from tests.gateway.helpers import make_msd, until, vin_for
from tests.gateway.receiver import Receiver

_FIXED = {"input", "other"} | ENVELOPE_KEYS | {"kind", "tps", "vehicle"}


@given(st.text(max_size=80))
def test_an_envelope_error_label_is_a_contract_key_or_a_fixed_class(path: str) -> None:
    assert reason_label(DecodeError("envelope", "x", path=path)) in _FIXED


@given(st.integers(min_value=0, max_value=10**9), st.sampled_from(["time", "lat", "fix_quality"]))
def test_nmea_sentence_indices_do_not_multiply_labels(index: int, field: str) -> None:
    assert reason_label(DecodeError("nmea", "x", path=f"sentence[{index}].{field}")) == f"sentence.{field}"


@given(st.text(max_size=80))
def test_any_label_is_short_and_free_of_indices(path: str) -> None:
    for codec in ("msd", "nmea", "envelope", "topic", "internal", "made-up"):
        label = reason_label(DecodeError(codec, "x", path=path))
        assert len(label) <= 97 and "[" not in label
        assert label in {"input", "other"} or codec in {"msd", "nmea", "envelope", "topic", "internal"}


async def test_a_repeated_vin_key_never_reaches_the_metrics(tmp_path: Path, receiver: Receiver) -> None:
    vin = vin_for(77)
    now = time.time()
    body = {"call_id": "c", "sent_at": now, "msd": make_msd(vin=vin, timestamp=int(now))}
    packed = msgpack.packb(body, use_bin_type=True)
    # The same unknown key (a VIN) twice: a map of 5 entries.
    payload = b"\x85" + packed[1:] + (msgpack.packb(vin) + msgpack.packb(1)) * 2
    cfg = gateway_config(tmp_path, broker=None, psap_url=receiver.url)
    async with running_gateway(cfg) as gw, aiohttp.ClientSession() as http:
        assert gw.http is not None
        async with http.post(
            f"http://127.0.0.1:{gw.http.port}/v1/ecall/acme/car/msd",
            data=payload,
            headers={"Authorization": f"Bearer {PROVIDER_TOKEN}", "Content-Type": "application/msgpack"},
        ) as resp:
            assert resp.status == 400
            assert vin not in await resp.text()
        await until(lambda: gw.processed == 1)
        await gw.settled()
        [q] = await gw.store.quarantined()
        assert q["codec"] == "envelope" and q["path"] == ""
        text = gw.metrics.render().decode()
    assert vin not in text
    assert 'ecallgw_decode_errors_total{codec="envelope",reason="input"} 1.0' in text
