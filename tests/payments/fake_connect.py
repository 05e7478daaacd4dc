"""A fake of Stripe's Connect API, in Stripe's wire format, in front of localstripe.

localstripe fakes charges, PaymentIntents, customers and refunds but has no Connect:
no accounts, account links, transfers, reversals or connected-account payouts. This
server (Starlette on 127.0.0.1, run in the test's event loop) implements those endpoints
and proxies every other path to localstripe, so the gateway under test has one
``api_base``, as it has in production.

Wire format, as the stripe SDK 16 sends and reads it: form-encoded bodies with bracket
notation (``metadata[ride_id]=r1``, arrays indexed ``expand[0]=x``), ``Bearer sk_...``
auth, ``Stripe-Account`` for calls made on a connected account, JSON answers with
``object`` and prefixed ids, and errors as ``{"error": {"type", "code", "message",
"param"}}`` with Stripe's status codes.

It also gives every POST (its own and the proxied ones: localstripe ignores the header)
Stripe's ``Idempotency-Key`` semantics: the same key with the same parameters replays the
first answer (``Idempotent-Replayed: true``); with other parameters it is a 400
``idempotency_error``; while the first request still runs, a 409. As at Stripe, only
answers from requests that ran are kept (2xx and card errors), not validation errors.

Known simplifications: balance transactions carry no fees and are available at once;
payouts stay ``pending``; only ``account_onboarding`` links exist; connected accounts see
only their own transfers, reversals and payouts; no webhooks are sent. A test can make
the next requests to a path fail or stall with ``add_fault()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import string
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

Handler = Callable[[Request], Awaitable[Response]]

DEFAULT_CURRENCY_BY_COUNTRY = {
    "US": "usd",
    "CA": "cad",
    "GB": "gbp",
    "AU": "aud",
    "MX": "mxn",
    "BR": "brl",
    "CH": "chf",
    "JP": "jpy",
    "FR": "eur",
    "DE": "eur",
    "ES": "eur",
    "IT": "eur",
    "NL": "eur",
}
ACCOUNT_LINK_TTL_S = 300
PAYOUT_DELAY_S = 2 * 86_400
MAX_PAGE_SIZE = 100


def new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(24))


def parse_form(raw: str) -> dict[str, Any]:
    """Stripe's form encoding (``a[b][0]=v``) as nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        parts = re.findall(r"[^\[\]]+", key)
        if not parts:
            continue
        node = root
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise StripeApiError(400, f"Invalid parameter: {key}", param=key)
            node = child
        node[parts[-1]] = value
    return _lists_from_indexed(root)


def _lists_from_indexed(node: dict[str, Any]) -> dict[str, Any]:
    for key, value in node.items():
        if isinstance(value, dict):
            nested = _lists_from_indexed(value)
            if nested and all(k.isdigit() for k in nested):
                node[key] = [nested[k] for k in sorted(nested, key=int)]
            else:
                node[key] = nested
    return node


class StripeApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"error": {"type": type, "message": message}}
        if code is not None:
            self.body["error"]["code"] = code
        if param is not None:
            self.body["error"]["param"] = param

    def response(self) -> Response:
        return stripe_json(self.body, self.status)


def stripe_json(content: Any, status: int = 200) -> Response:
    return JSONResponse(content, status_code=status, headers={"Request-Id": new_id("req_")})


def missing(param: str) -> StripeApiError:
    return StripeApiError(
        400, f"Missing required param: {param}.", code="parameter_missing", param=param
    )


def positive_int(form: dict[str, Any], param: str, *, required: bool = True) -> int | None:
    value = form.get(param)
    if value is None:
        if required:
            raise missing(param)
        return None
    if not isinstance(value, str) or not value.isdigit() or int(value) <= 0:
        raise StripeApiError(400, f"Invalid positive integer: {value}", param=param)
    return int(value)


def metadata_of(form: dict[str, Any]) -> dict[str, str]:
    metadata = form.get("metadata", {})
    if metadata == "":
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise StripeApiError(400, "Invalid metadata", param="metadata")
    return dict(metadata)


def balance_transaction(
    *, amount: int, currency: str, type: str, source: str, reporting_category: str
) -> dict[str, Any]:
    now = int(time.time())
    return {
        "id": new_id("txn_"),
        "object": "balance_transaction",
        "amount": amount,
        "available_on": now,
        "created": now,
        "currency": currency,
        "description": None,
        "exchange_rate": None,
        "fee": 0,
        "fee_details": [],
        "net": amount,
        "reporting_category": reporting_category,
        "source": source,
        "status": "available",
        "type": type,
    }


@dataclass
class ConnectedAccount:
    data: dict[str, Any]
    available: dict[str, int] = field(default_factory=dict)
    balance_transactions: list[dict[str, Any]] = field(default_factory=list)
    payouts: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class AccountLink:
    account_id: str
    return_url: str
    refresh_url: str
    expires_at: int
    used: bool = False


@dataclass
class StoredAnswer:
    fingerprint: tuple[str, tuple[tuple[str, str], ...]]
    status: int
    body: bytes
    content_type: str | None


@dataclass
class Fault:
    method: str
    path: str
    status: int
    times: int
    delay_s: float


class FakeConnect:
    """Connect endpoints plus a proxy to localstripe, served on a free loopback port."""

    def __init__(self, upstream_base_url: str) -> None:
        self.base_url = ""
        self._upstream = httpx.AsyncClient(base_url=upstream_base_url, timeout=10.0)
        self._accounts: dict[str, ConnectedAccount] = {}
        self._links: dict[str, AccountLink] = {}
        self._transfers: dict[str, dict[str, Any]] = {}
        self._platform_transactions: list[dict[str, Any]] = []
        self._answers: dict[tuple[str, str, str], StoredAnswer | None] = {}
        self._faults: list[Fault] = []
        # Connect calls read localstripe, then write here: one at a time, so two transfers
        # from one charge cannot both pass the "not more than the charge" check.
        self._writes = asyncio.Lock()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.app = Starlette(
            routes=[
                Route("/setup/e/{account_id}/{token}", self._onboard, methods=["GET"]),
                Route("/v1/accounts", self._api(self._create_account), methods=["POST"]),
                Route(
                    "/v1/accounts/{account_id}",
                    self._api(self._retrieve_account),
                    methods=["GET"],
                ),
                Route("/v1/account_links", self._api(self._create_account_link), methods=["POST"]),
                Route("/v1/transfers", self._api(self._create_transfer), methods=["POST"]),
                Route(
                    "/v1/transfers/{transfer_id}",
                    self._api(self._retrieve_transfer),
                    methods=["GET"],
                ),
                Route(
                    "/v1/transfers/{transfer_id}/reversals",
                    self._api(self._reverse_transfer),
                    methods=["POST"],
                ),
                Route(
                    "/v1/balance_transactions",
                    self._api(self._list_balance_transactions),
                    methods=["GET"],
                ),
                Route("/v1/payouts", self._api(self._create_payout), methods=["POST"]),
                Route("/v1/payouts/{payout_id}", self._api(self._retrieve_payout), methods=["GET"]),
                Route("/{path:path}", self._api(self._proxy), methods=["GET", "POST", "DELETE"]),
            ]
        )

    async def start(self) -> None:
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=0, log_config=None, lifespan="off", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=10)
        await self._upstream.aclose()

    def add_fault(
        self,
        path: str,
        *,
        method: str = "POST",
        status: int = 500,
        times: int = 1,
        delay_s: float = 0,
    ) -> None:
        """Makes the next ``times`` requests to ``path`` wait ``delay_s``, then answer
        ``status`` (an api_error) or, when ``status`` is 0, be served as usual."""
        self._faults.append(
            Fault(method=method, path=path, status=status, times=times, delay_s=delay_s)
        )

    def clear_faults(self) -> None:
        self._faults.clear()

    # -- the common path of every API request ------------------------------------------

    def _api(self, handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                # The whole request has arrived before Stripe acts on it, even when the
                # answer comes too late for the client.
                await request.body()
                fault = self._take_fault(request)
                if fault is not None and fault.status:
                    await asyncio.sleep(fault.delay_s)
                    raise StripeApiError(
                        fault.status, "An unknown error occurred", type="api_error"
                    )
                delay_s = fault.delay_s if fault is not None else 0.0
                return await self._idempotent(request, handler, delay_s)
            except StripeApiError as error:
                return error.response()

        return endpoint

    def _take_fault(self, request: Request) -> Fault | None:
        for fault in self._faults:
            if fault.method == request.method and fault.path == request.url.path:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    async def _idempotent(self, request: Request, handler: Handler, delay_s: float) -> Response:
        key = request.headers.get("idempotency-key")
        if request.method != "POST" or not key:
            await asyncio.sleep(delay_s)
            return await handler(request)
        scope = (
            request.headers.get("authorization", ""),
            request.headers.get("stripe-account", ""),
            key,
        )
        body = (await request.body()).decode()
        fingerprint = (request.url.path, tuple(sorted(parse_qsl(body, keep_blank_values=True))))
        if scope in self._answers:
            stored = self._answers[scope]
            if stored is None:
                raise StripeApiError(
                    409,
                    "There is currently another in-progress request using this "
                    f"Stripe-Idempotency-Key ({key}); try again later.",
                    type="idempotency_error",
                )
            if stored.fingerprint != fingerprint:
                raise StripeApiError(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters "
                    f"they were first used with. Try using a key other than '{key}' if you "
                    "meant to execute a different request.",
                    type="idempotency_error",
                )
            headers = {"Idempotent-Replayed": "true", "Idempotency-Key": key}
            return Response(
                stored.body,
                status_code=stored.status,
                headers=headers,
                media_type=stored.content_type,
            )
        self._answers[scope] = None
        try:
            await asyncio.sleep(delay_s)
            try:
                response = await handler(request)
            except StripeApiError as error:
                response = error.response()
        except BaseException:
            del self._answers[scope]
            raise
        if response.status_code < 300 or response.status_code == 402:
            self._answers[scope] = StoredAnswer(
                fingerprint=fingerprint,
                status=response.status_code,
                body=bytes(response.body),
                content_type=response.headers.get("content-type"),
            )
        else:
            del self._answers[scope]
        response.headers["Idempotency-Key"] = key
        return response

    @staticmethod
    def _authenticate(request: Request) -> None:
        scheme, _, api_key = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or not api_key.startswith(("sk_", "rk_")):
            raise StripeApiError(
                401,
                "You did not provide an API key. Provide it in the Authorization header, "
                "using Bearer auth.",
            )

    def _connected_account(self, request: Request) -> ConnectedAccount | None:
        account_id = request.headers.get("stripe-account")
        if account_id is None:
            return None
        account = self._accounts.get(account_id)
        if account is None:
            raise StripeApiError(
                403,
                "The provided key does not have access to account "
                f"'{account_id}' (or that account does not exist).",
                code="account_invalid",
            )
        return account

    @staticmethod
    async def _form(request: Request) -> dict[str, Any]:
        return parse_form((await request.body()).decode())

    # -- localstripe -------------------------------------------------------------------

    async def _proxy(self, request: Request) -> Response:
        if request.headers.get("stripe-account"):
            # localstripe would silently act on the platform instead.
            raise StripeApiError(
                400, f"fake_connect: {request.url.path} is not faked on connected accounts"
            )
        headers = {
            name: request.headers[name]
            for name in ("authorization", "content-type", "stripe-version")
            if name in request.headers
        }
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        upstream = await self._upstream.request(
            request.method, target, content=await request.body(), headers=headers
        )
        return Response(
            upstream.content,
            status_code=upstream.status_code,
            media_type=upstream.headers.get("content-type"),
        )

    async def _upstream_charge(self, request: Request, charge_id: str) -> dict[str, Any] | None:
        response = await self._upstream.get(
            f"/v1/charges/{charge_id}",
            headers={"authorization": request.headers.get("authorization", "")},
        )
        if response.status_code == 404:
            return None
        response.raise_for_status()
        charge: dict[str, Any] = response.json()
        return charge

    async def _upstream_balance_transactions(self, request: Request) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        query: dict[str, str] = {"limit": str(MAX_PAGE_SIZE)}
        while True:
            response = await self._upstream.get(
                "/v1/balance_transactions",
                params=query,
                headers={"authorization": request.headers.get("authorization", "")},
            )
            response.raise_for_status()
            page = response.json()
            found.extend(page["data"])
            if not page["has_more"] or not page["data"]:
                return found
            query["starting_after"] = page["data"][-1]["id"]

    # -- accounts and onboarding -------------------------------------------------------

    async def _create_account(self, request: Request) -> Response:
        self._authenticate(request)
        form = await self._form(request)
        account_type = form.get("type")
        if account_type not in ("express", "custom", "standard"):
            raise StripeApiError(
                400, "type must be one of express, custom or standard", param="type"
            )
        country = form.get("country", "US")
        if country not in DEFAULT_CURRENCY_BY_COUNTRY:
            raise StripeApiError(400, f"Country '{country}' is unknown", param="country")
        capabilities = form.get("capabilities", {})
        if not isinstance(capabilities, dict):
            raise StripeApiError(400, "Invalid capabilities", param="capabilities")
        requested = sorted(
            name
            for name, options in capabilities.items()
            if isinstance(options, dict) and options.get("requested") == "true"
        )
        if account_type == "express" and "transfers" not in requested:
            raise StripeApiError(
                400,
                "Express accounts must request the `transfers` capability.",
                param="capabilities",
            )
        account_id = new_id("acct_")
        due = ["business_profile.url", "external_account", "individual.dob.day", "tos_acceptance"]
        data = {
            "id": account_id,
            "object": "account",
            "type": account_type,
            "country": country,
            "email": form.get("email"),
            "default_currency": DEFAULT_CURRENCY_BY_COUNTRY[country],
            "business_type": form.get("business_type"),
            "capabilities": dict.fromkeys(requested, "inactive"),
            "charges_enabled": False,
            "payouts_enabled": False,
            "details_submitted": False,
            "requirements": {
                "currently_due": due,
                "eventually_due": due,
                "past_due": [],
                "pending_verification": [],
                "errors": [],
                "current_deadline": None,
                "disabled_reason": "requirements.past_due",
            },
            "metadata": metadata_of(form),
            "created": int(time.time()),
            "livemode": False,
        }
        self._accounts[account_id] = ConnectedAccount(data=data)
        return stripe_json(data)

    async def _retrieve_account(self, request: Request) -> Response:
        self._authenticate(request)
        account = self._accounts.get(request.path_params["account_id"])
        if account is None:
            raise StripeApiError(
                404,
                f"No such account: '{request.path_params['account_id']}'",
                code="resource_missing",
                param="account",
            )
        return stripe_json(account.data)

    async def _create_account_link(self, request: Request) -> Response:
        self._authenticate(request)
        form = await self._form(request)
        for param in ("account", "type", "return_url", "refresh_url"):
            if not form.get(param):
                raise missing(param)
        if form["account"] not in self._accounts:
            raise StripeApiError(
                400,
                f"No such account: '{form['account']}'",
                code="resource_missing",
                param="account",
            )
        if form["type"] != "account_onboarding":
            raise StripeApiError(
                400, "fake_connect only makes account_onboarding links", param="type"
            )
        now = int(time.time())
        token = secrets.token_urlsafe(16)
        self._links[token] = AccountLink(
            account_id=form["account"],
            return_url=form["return_url"],
            refresh_url=form["refresh_url"],
            expires_at=now + ACCOUNT_LINK_TTL_S,
        )
        return stripe_json(
            {
                "object": "account_link",
                "created": now,
                "expires_at": now + ACCOUNT_LINK_TTL_S,
                "url": f"{self.base_url}/setup/e/{form['account']}/{token}",
            }
        )

    async def _onboard(self, request: Request) -> Response:
        """The driver following the link and finishing Stripe's onboarding form."""
        link = self._links.get(request.path_params["token"])
        if link is None or link.account_id != request.path_params["account_id"]:
            return Response("unknown onboarding link", status_code=404)
        if link.used or link.expires_at < time.time():
            return RedirectResponse(link.refresh_url, status_code=302)
        link.used = True
        data = self._accounts[link.account_id].data
        data["capabilities"] = dict.fromkeys(data["capabilities"], "active")
        data["details_submitted"] = True
        data["charges_enabled"] = data["capabilities"].get("card_payments") == "active"
        data["payouts_enabled"] = True
        data["requirements"].update(
            currently_due=[], eventually_due=[], past_due=[], disabled_reason=None
        )
        return RedirectResponse(link.return_url, status_code=302)

    # -- transfers and reversals -------------------------------------------------------

    async def _create_transfer(self, request: Request) -> Response:
        self._authenticate(request)
        if request.headers.get("stripe-account"):
            raise StripeApiError(400, "fake_connect makes transfers from the platform only")
        form = await self._form(request)
        amount = positive_int(form, "amount")
        assert amount is not None
        currency = form.get("currency")
        if not currency:
            raise missing("currency")
        destination_id = form.get("destination")
        if not destination_id:
            raise missing("destination")
        async with self._writes:
            destination = self._accounts.get(destination_id)
            if destination is None:
                raise StripeApiError(
                    400,
                    f"No such destination: '{destination_id}'",
                    code="resource_missing",
                    param="destination",
                )
            if destination.data["capabilities"].get("transfers") != "active":
                raise StripeApiError(
                    400,
                    "Your destination account needs to have at least one of the following "
                    "capabilities enabled: transfers, crypto_transfers, legacy_payments",
                    code="insufficient_capabilities_for_transfer",
                    param="destination",
                )
            source_id = form.get("source_transaction")
            if source_id is not None:
                await self._check_source_transaction(request, source_id, amount, currency)
            transfer_id = new_id("tr_")
            payment_id = new_id("py_")
            platform_entry = balance_transaction(
                amount=-amount,
                currency=currency,
                type="transfer",
                source=transfer_id,
                reporting_category="transfer",
            )
            self._platform_transactions.append(platform_entry)
            destination.balance_transactions.append(
                balance_transaction(
                    amount=amount,
                    currency=currency,
                    type="payment",
                    source=payment_id,
                    reporting_category="charge",
                )
            )
            destination.available[currency] = destination.available.get(currency, 0) + amount
            transfer = {
                "id": transfer_id,
                "object": "transfer",
                "amount": amount,
                "amount_reversed": 0,
                "balance_transaction": platform_entry["id"],
                "created": platform_entry["created"],
                "currency": currency,
                "description": form.get("description"),
                "destination": destination_id,
                "destination_payment": payment_id,
                "livemode": False,
                "metadata": metadata_of(form),
                "reversals": {
                    "object": "list",
                    "data": [],
                    "has_more": False,
                    "total_count": 0,
                    "url": f"/v1/transfers/{transfer_id}/reversals",
                },
                "reversed": False,
                "source_transaction": source_id,
                "source_type": "card",
                "transfer_group": form.get("transfer_group"),
            }
            self._transfers[transfer_id] = transfer
        return stripe_json(transfer)

    async def _check_source_transaction(
        self, request: Request, source_id: str, amount: int, currency: str
    ) -> None:
        charge = (
            await self._upstream_charge(request, source_id) if source_id.startswith("ch_") else None
        )
        if charge is None:
            raise StripeApiError(
                400,
                f"No such charge: '{source_id}'",
                code="resource_missing",
                param="source_transaction",
            )
        if charge["status"] != "succeeded" or not charge["captured"]:
            raise StripeApiError(
                400,
                f"The source_transaction {source_id} has not been captured.",
                param="source_transaction",
            )
        if charge["currency"] != currency:
            raise StripeApiError(
                400,
                f"The currency of the transfer ({currency}) must match the currency of the "
                f"source_transaction ({charge['currency']}).",
                param="currency",
            )
        # localstripe counts the uncaptured remainder of a partial capture as refunded.
        released = charge["amount"] - charge["amount_captured"]
        refunded = charge["amount_refunded"] - released
        already = sum(
            t["amount"] for t in self._transfers.values() if t["source_transaction"] == source_id
        )
        available = charge["amount_captured"] - refunded - already
        if amount > available:
            raise StripeApiError(
                400,
                f"Transfer amount ({amount}) exceeds the {available} left on source "
                f"transaction {source_id}.",
                code="amount_too_large",
                param="amount",
            )

    def _transfer(self, transfer_id: str) -> dict[str, Any]:
        transfer = self._transfers.get(transfer_id)
        if transfer is None:
            raise StripeApiError(
                404, f"No such transfer: '{transfer_id}'", code="resource_missing", param="id"
            )
        return transfer

    async def _retrieve_transfer(self, request: Request) -> Response:
        self._authenticate(request)
        return stripe_json(self._transfer(request.path_params["transfer_id"]))

    async def _reverse_transfer(self, request: Request) -> Response:
        self._authenticate(request)
        form = await self._form(request)
        async with self._writes:
            transfer = self._transfer(request.path_params["transfer_id"])
            remaining = transfer["amount"] - transfer["amount_reversed"]
            if remaining <= 0:
                raise StripeApiError(
                    400,
                    f"Transfer {transfer['id']} has already been fully reversed.",
                    code="transfer_already_reversed",
                )
            amount = positive_int(form, "amount", required=False) or remaining
            if amount > remaining:
                raise StripeApiError(
                    400,
                    f"Reversal amount ({amount}) is greater than the amount left on the "
                    f"transfer ({remaining}).",
                    param="amount",
                )
            currency = transfer["currency"]
            destination = self._accounts[transfer["destination"]]
            if destination.available.get(currency, 0) < amount:
                raise StripeApiError(
                    400,
                    "Insufficient funds in the connected account's Stripe balance to reverse "
                    "this transfer.",
                    code="balance_insufficient",
                )
            reversal_id = new_id("trr_")
            refund_id = new_id("pyr_")
            platform_entry = balance_transaction(
                amount=amount,
                currency=currency,
                type="transfer_refund",
                source=reversal_id,
                reporting_category="transfer_reversal",
            )
            self._platform_transactions.append(platform_entry)
            destination.balance_transactions.append(
                balance_transaction(
                    amount=-amount,
                    currency=currency,
                    type="payment_refund",
                    source=refund_id,
                    reporting_category="refund",
                )
            )
            destination.available[currency] -= amount
            reversal = {
                "id": reversal_id,
                "object": "transfer_reversal",
                "amount": amount,
                "balance_transaction": platform_entry["id"],
                "created": platform_entry["created"],
                "currency": currency,
                "destination_payment_refund": refund_id,
                "metadata": metadata_of(form),
                "source_refund": None,
                "transfer": transfer["id"],
            }
            transfer["amount_reversed"] += amount
            transfer["reversed"] = transfer["amount_reversed"] == transfer["amount"]
            reversals = transfer["reversals"]
            reversals["data"].insert(0, reversal)
            reversals["total_count"] += 1
        return stripe_json(reversal)

    # -- payouts -----------------------------------------------------------------------

    async def _create_payout(self, request: Request) -> Response:
        self._authenticate(request)
        account = self._connected_account(request)
        if account is None:
            return await self._proxy(request)
        form = await self._form(request)
        amount = positive_int(form, "amount")
        assert amount is not None
        currency = form.get("currency")
        if not currency:
            raise missing("currency")
        async with self._writes:
            if not account.data["payouts_enabled"]:
                raise StripeApiError(
                    400,
                    "This account cannot currently make payouts.",
                    code="payouts_not_allowed",
                )
            if account.available.get(currency, 0) < amount:
                raise StripeApiError(
                    400,
                    "You have insufficient funds in your Stripe account for this payout.",
                    code="balance_insufficient",
                    param="amount",
                )
            payout_id = new_id("po_")
            entry = balance_transaction(
                amount=-amount,
                currency=currency,
                type="payout",
                source=payout_id,
                reporting_category="payout",
            )
            account.balance_transactions.append(entry)
            account.available[currency] -= amount
            payout = {
                "id": payout_id,
                "object": "payout",
                "amount": amount,
                "arrival_date": entry["created"] + PAYOUT_DELAY_S,
                "automatic": False,
                "balance_transaction": entry["id"],
                "created": entry["created"],
                "currency": currency,
                "description": form.get("description"),
                "destination": new_id("ba_"),
                "failure_code": None,
                "failure_message": None,
                "livemode": False,
                "metadata": metadata_of(form),
                "method": form.get("method", "standard"),
                "source_type": "card",
                "status": "pending",
                "type": "bank_account",
            }
            account.payouts[payout_id] = payout
        return stripe_json(payout)

    async def _retrieve_payout(self, request: Request) -> Response:
        self._authenticate(request)
        account = self._connected_account(request)
        if account is None:
            return await self._proxy(request)
        payout = account.payouts.get(request.path_params["payout_id"])
        if payout is None:
            raise StripeApiError(
                404,
                f"No such payout: '{request.path_params['payout_id']}'",
                code="resource_missing",
                param="id",
            )
        return stripe_json(payout)

    # -- balance transactions ----------------------------------------------------------

    async def _list_balance_transactions(self, request: Request) -> Response:
        self._authenticate(request)
        query = parse_form(request.url.query)
        account = self._connected_account(request)
        limit = int(query.pop("limit", "10"))
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise StripeApiError(400, f"limit must be between 1 and {MAX_PAGE_SIZE}", param="limit")
        starting_after = query.pop("starting_after", None)
        wanted_type = query.pop("type", None)
        created = query.pop("created", None)
        if query:
            raise StripeApiError(
                400, f"Received unknown parameter: {sorted(query)[0]}", param=sorted(query)[0]
            )
        if account is None:
            entries = [*await self._upstream_balance_transactions(request)]
            entries.extend(self._platform_transactions)
        else:
            entries = list(account.balance_transactions)
        entries = [
            e
            for e in entries
            if (wanted_type is None or e["type"] == wanted_type) and _created_matches(e, created)
        ]
        # Newest first, as Stripe lists them; the id breaks ties within a second so pages
        # stay consistent.
        entries.sort(key=lambda e: (e["created"], e["id"]), reverse=True)
        start = 0
        if starting_after is not None:
            positions = [i for i, e in enumerate(entries) if e["id"] == starting_after]
            if not positions:
                raise StripeApiError(
                    400,
                    f"No such balance transaction: '{starting_after}'",
                    code="resource_missing",
                    param="starting_after",
                )
            start = positions[0] + 1
        page = entries[start : start + limit]
        return stripe_json(
            {
                "object": "list",
                "data": page,
                "has_more": start + limit < len(entries),
                "url": "/v1/balance_transactions",
            }
        )


def _created_matches(entry: dict[str, Any], created: Any) -> bool:
    if created is None:
        return True
    moment = int(entry["created"])
    if isinstance(created, str):
        return moment == int(created)
    if not isinstance(created, dict):
        raise StripeApiError(400, "Invalid created filter", param="created")
    checks = {
        "gt": lambda bound: moment > bound,
        "gte": lambda bound: moment >= bound,
        "lt": lambda bound: moment < bound,
        "lte": lambda bound: moment <= bound,
    }
    for operator, bound in created.items():
        if operator not in checks:
            raise StripeApiError(400, f"Invalid created[{operator}]", param="created")
        if not checks[operator](int(bound)):
            return False
    return True


@contextlib.asynccontextmanager
async def running_fake_connect(upstream_base_url: str) -> AsyncIterator[FakeConnect]:
    fake = FakeConnect(upstream_base_url)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()
