"""localstripe (a stateful fake Stripe server from PyPI) on loopback, with fixes.

``LocalStripe`` starts it as a subprocess (``python -m tests.payments.localstripe``) and
stops it. The child process imports localstripe's aiohttp app, patches the places where
localstripe 1.15.10 answers differently from Stripe in ways our gateway would notice, and
serves it on 127.0.0.1 only: localstripe's own CLI binds every interface (``::``) and has
no host flag.

The patches (each one a localstripe limitation):

- The store is pickled to /tmp/localstripe.pickle after every write and reloaded at
  start: parallel runs would share and clobber it. Here it lives in memory only.
- The SDK's API version names the allowed methods ``allowed_payment_method_types``;
  localstripe only knows the older ``payment_method_types``. The new name is translated.
- PaymentIntents lack ``amount_capturable`` and ``amount_received``, and embed the whole
  ``latest_charge`` object where Stripe sends its id unless asked to expand it. Charges
  lack ``amount_captured``.
- A partial capture recorded a balance transaction for the whole authorization plus a
  refund (and its balance transaction) for the rest; Stripe records only the captured
  amount and releases the rest without a refund.
- A refund without an amount refunded the authorized amount even after a partial
  capture, and no refund was checked against what remained refundable.
- A confirmed SetupIntent did not attach its payment method to the customer.
- Card errors came back as ``invalid_request_error`` without ``decline_code`` and, for a
  PaymentIntent, without the ``payment_intent``; 404s came back without
  ``resource_missing``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PINNED_VERSION = "1.15.10"


class LocalStripe:
    """A localstripe child process serving on a free loopback port."""

    def __init__(self, api_key: str, log_path: Path) -> None:
        self._api_key = api_key
        self._log_path = log_path
        self._log: TextIO | None = None
        self._process: subprocess.Popen[str] | None = None
        self.base_url = ""

    def start(self, timeout_s: float = 20.0) -> None:
        self._log = self._log_path.open("w")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.payments.localstripe"],
            cwd=PROJECT_ROOT,
            # The child exits when this pipe closes, so a killed test run leaves no server.
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        assert self._process.stdout is not None
        # The child binds port 0 itself and prints the port it got: no race for a port.
        line = self._process.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"localstripe did not start; see {self._log_path}")
        self.base_url = f"http://127.0.0.1:{int(line)}"
        self._wait_until_it_answers(timeout_s)

    def _wait_until_it_answers(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                response = httpx.get(
                    f"{self.base_url}/v1/balance",
                    headers={"Authorization": f"Bearer {self._api_key}"},
                    timeout=1.0,
                )
                if response.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("localstripe did not answer in time")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=5)
        for pipe in (self._process.stdin, self._process.stdout):
            if pipe is not None:
                pipe.close()
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None


def _patch_localstripe() -> None:
    import localstripe  # type: ignore[import-untyped]
    from localstripe import resources
    from localstripe.errors import UserError  # type: ignore[import-untyped]

    if localstripe.__version__ != PINNED_VERSION:
        raise RuntimeError(
            f"these patches were written for localstripe {PINNED_VERSION}, "
            f"not {localstripe.__version__}"
        )

    resources.Store.dump_to_disk = lambda self: None

    charge_cls: Any = resources.Charge
    payment_intent_cls: Any = resources.PaymentIntent
    setup_intent_cls: Any = resources.SetupIntent
    refund_cls: Any = resources.Refund

    def accept_allowed_types(cls: Any) -> None:
        original: Callable[..., None] = cls.__init__

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            if "allowed_payment_method_types" in kwargs:
                kwargs["payment_method_types"] = kwargs.pop("allowed_payment_method_types")
            original(self, *args, **kwargs)

        cls.__init__ = __init__

    accept_allowed_types(payment_intent_cls)
    accept_allowed_types(setup_intent_cls)

    def charge_amount_captured(self: Any) -> int:
        if not self.captured or self.status != "succeeded":
            return 0
        return int(getattr(self, "_amount_captured", self.amount))

    def charge_amount_released(self: Any) -> int:
        return int(self.amount - self.amount_captured) if self.captured else 0

    def charge_amount_refunded(self: Any) -> int:
        refunded = sum(refund.amount for refund in self.refunds._list)
        return int(refunded + charge_amount_released(self))

    charge_cls.amount_captured = property(charge_amount_captured)
    charge_cls.amount_refunded = property(charge_amount_refunded)

    def capture(self: Any, amount: Any, on_success: Callable[[], None] | None = None) -> None:
        amount = self.amount if amount is None else resources.try_convert_to_int(amount)
        if not (type(amount) is int and 0 < amount <= self.amount):
            raise UserError(400, "Bad amount_to_capture", {"param": "amount_to_capture"})
        if self.captured or self.status != "succeeded":
            raise UserError(
                400, "This charge cannot be captured", {"code": "charge_not_capturable"}
            )
        self._amount_captured = amount
        transaction = resources.BalanceTransaction(
            amount=amount,
            currency=self.currency,
            description=self.description,
            exchange_rate=1.0,
            reporting_category="charge",
            source=self.id,
            type="charge",
        )
        self.balance_transaction = transaction.id
        self.captured = True
        if on_success is not None:
            on_success()

    charge_cls._capture = capture

    def amount_capturable(self: Any) -> int:
        if self.status != "requires_capture":
            return 0
        return int(self.latest_charge.amount)

    def amount_received(self: Any) -> int:
        charge = self.latest_charge
        return 0 if charge is None else int(charge.amount_captured)

    original_intent_capture: Callable[..., Any] = payment_intent_cls._api_capture

    def capture_intent(id: Any, **kwargs: Any) -> Any:
        intent = payment_intent_cls._api_retrieve(id)
        if intent.status != "requires_capture":
            raise UserError(
                400,
                f"This PaymentIntent could not be captured because it has a status of "
                f"{intent.status}.",
                {"code": "payment_intent_unexpected_state"},
            )
        return original_intent_capture(id, **kwargs)

    payment_intent_cls._api_capture = staticmethod(capture_intent)
    # The route table captured the original function at import; point it at ours.
    resources.extra_apis[:] = [
        (method, url, capture_intent if func == original_intent_capture else func)
        for method, url, func in resources.extra_apis
    ]

    payment_intent_cls.amount_capturable = property(amount_capturable)
    payment_intent_cls.amount_received = property(amount_received)

    original_intent_export: Callable[..., dict[str, Any]] = payment_intent_cls._export

    def export_payment_intent(self: Any, expand: list[str] | None = None) -> dict[str, Any]:
        exported = original_intent_export(self, expand=expand)
        # Removed from the API in 2022; Stripe no longer sends it.
        exported.pop("charges", None)
        latest_charge = exported.get("latest_charge")
        if isinstance(latest_charge, dict) and "latest_charge" not in (expand or []):
            exported["latest_charge"] = latest_charge["id"]
        return exported

    payment_intent_cls._export = export_payment_intent

    original_report_failure: Callable[[Any], None] = payment_intent_cls._report_failure

    def report_failure(self: Any) -> None:
        try:
            original_report_failure(self)
        except UserError as exc:
            exc.body["error"]["payment_intent"] = self._export()
            raise

    payment_intent_cls._report_failure = report_failure

    original_refund_init: Callable[..., None] = refund_cls.__init__

    def refund_init(
        self: Any,
        charge: Any = None,
        payment_intent: Any = None,
        amount: Any = None,
        **kwargs: Any,
    ) -> None:
        charge_object = None
        if isinstance(payment_intent, str) and payment_intent.startswith("pi_"):
            intent = payment_intent_cls._api_retrieve(payment_intent)
            charge_object = intent.latest_charge
        elif isinstance(charge, str) and charge.startswith("ch_"):
            charge_object = charge_cls._api_retrieve(charge)
        if charge_object is not None and not charge_object.captured:
            raise UserError(
                400,
                f"Charge {charge_object.id} has not been captured; cancel it instead.",
                {"code": "charge_not_captured"},
            )
        if charge_object is not None:
            refunded = sum(refund.amount for refund in charge_object.refunds._list)
            remaining = charge_object.amount_captured - refunded
            if remaining <= 0:
                raise UserError(
                    400,
                    f"Charge {charge_object.id} has already been refunded.",
                    {"code": "charge_already_refunded"},
                )
            amount = remaining if amount is None else resources.try_convert_to_int(amount)
            if type(amount) is int and amount > remaining:
                raise UserError(
                    400,
                    f"Refund amount ({amount}) is greater than unrefunded amount on "
                    f"charge ({remaining})",
                    {"param": "amount"},
                )
        original_refund_init(
            self, charge=charge, payment_intent=payment_intent, amount=amount, **kwargs
        )

    refund_cls.__init__ = refund_init

    original_attach_pm: Callable[[Any, Any], None] = setup_intent_cls._attach_pm

    def attach_pm(self: Any, payment_method: Any) -> None:
        original_attach_pm(self, payment_method)
        if self.status == "succeeded" and self.customer is not None:
            payment_method.customer = self.customer

    setup_intent_cls._attach_pm = attach_pm

    original_error_init: Callable[..., None] = UserError.__init__

    def error_init(self: Any, code: int, message: Any = None, contents: Any = None) -> None:
        original_error_init(self, code, message, contents)
        error = self.body["error"]
        if code == 402:
            error["type"] = "card_error"
            if error.get("code") == "card_declined":
                error.setdefault("decline_code", "generic_decline")
        elif code == 404:
            error.setdefault("code", "resource_missing")

    UserError.__init__ = error_init


def _exit_when_the_parent_is_gone() -> None:
    sys.stdin.read()
    os._exit(0)


def main() -> None:
    import socket
    import threading

    from aiohttp import web

    argparse.ArgumentParser(description=__doc__).parse_args()
    threading.Thread(target=_exit_when_the_parent_is_gone, daemon=True).start()
    _patch_localstripe()
    from localstripe.server import app  # type: ignore[import-untyped]

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(app, sock=sock, print=None, access_log=None, shutdown_timeout=1.0)


if __name__ == "__main__":
    main()
