"""Stripe, faked at the process boundary: localstripe behind the Connect fake.

The two servers start once per session, and only for the tests that ask for them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from infra.settings import StripeSettings
from payments.stripe_gateway import StripeGateway
from tests.payments.fake_connect import FakeConnect
from tests.payments.localstripe import LocalStripe

TEST_STRIPE_API_KEY = "sk_test_ridecoop_0123456789abcdef"
TEST_STRIPE_PUBLISHABLE_KEY = "pk_test_ridecoop_0123456789abcdef"
TEST_WEBHOOK_SECRET = "whsec_ridecoop_test_0123456789abcdef"
CONNECT_RETURN_URL = "https://ridecoop.test/connect/return"
CONNECT_REFRESH_URL = "https://ridecoop.test/connect/refresh"


@pytest.fixture(scope="session")
def localstripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStripe]:
    server = LocalStripe(
        TEST_STRIPE_API_KEY, tmp_path_factory.mktemp("localstripe") / "localstripe.log"
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def fake_stripe(localstripe: LocalStripe) -> AsyncIterator[FakeConnect]:
    fake = FakeConnect(localstripe.base_url)
    await fake.start()
    yield fake
    await fake.stop()


def stripe_settings_for(fake: FakeConnect, **overrides: object) -> StripeSettings:
    fields: dict[str, object] = {
        "api_key": TEST_STRIPE_API_KEY,
        "webhook_secret": TEST_WEBHOOK_SECRET,
        "api_base": fake.base_url,
        "connect_return_url": CONNECT_RETURN_URL,
        "connect_refresh_url": CONNECT_REFRESH_URL,
        # The SDK's retries are switched on by the tests about retrying.
        "max_network_retries": 0,
        "timeout_s": 5,
        **overrides,
    }
    return StripeSettings.model_validate(fields)


@pytest.fixture
def stripe_settings(fake_stripe: FakeConnect) -> StripeSettings:
    return stripe_settings_for(fake_stripe)


@pytest.fixture
async def stripe_gateway(
    stripe_settings: StripeSettings, fake_stripe: FakeConnect
) -> AsyncIterator[StripeGateway]:
    gateway = StripeGateway(stripe_settings)
    yield gateway
    await gateway.aclose()
    fake_stripe.clear_faults()
