"""The SSRF guard on callback URLs (thumbify/callback_url.py): literal addresses and /etc/hosts names only, no DNS."""

from __future__ import annotations

import pytest

from thumbify import callback_url
from thumbify.errors import InvalidCallbackUrl
from thumbify.settings import Settings


def _settings(**overrides: object) -> Settings:
    return Settings(**overrides)


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://localhost:8443/hook",
        "https://10.1.2.3/hook",
        "https://172.16.0.9/hook",
        "https://192.168.1.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[fe80::1]/hook",
        "https://[fd00::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://224.0.0.1/hook",
        "https://240.0.0.1/hook",
        "https://0.0.0.0/hook",
        "https://100.64.0.1/hook",
    ],
)
def test_internal_addresses_are_refused(url: str) -> None:
    with pytest.raises(InvalidCallbackUrl, match="internal address"):
        callback_url.check(url, _settings())


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://93.184.215.14/hook", "must use https"),
        ("ftp://93.184.215.14/hook", "must use https"),
        ("/relative", "must use https"),
        ("https:///nohost", "no host"),
        ("https://user:pw@93.184.215.14/hook", "credentials"),
        ("https://93.184.215.14:99999/hook", "not a URL"),
        ("https://93.184.215.14/" + "a" * 3000, "longer than"),
    ],
)
def test_malformed_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(InvalidCallbackUrl, match=message):
        callback_url.check(url, _settings())


def test_public_address_passes_and_http_only_by_setting() -> None:
    assert callback_url.check("https://93.184.215.14:8443/hook", _settings()).port == 8443
    assert callback_url.check("http://93.184.215.14/hook", _settings(callback_allow_http=True)).scheme == "http"


def test_allow_list_names_a_host_or_a_host_and_port() -> None:
    by_host = _settings(callback_allow_hosts=["127.0.0.1"], callback_allow_http=True)
    assert callback_url.check("http://127.0.0.1:9000/hook", by_host).hostname == "127.0.0.1"
    by_port = _settings(callback_allow_hosts=["127.0.0.1:9000"], callback_allow_http=True)
    assert callback_url.check("http://127.0.0.1:9000/hook", by_port).port == 9000
    with pytest.raises(InvalidCallbackUrl, match="internal address"):
        callback_url.check("http://127.0.0.1:9001/hook", by_port)
    # The allow-list lifts the address check only: the scheme rule still holds.
    with pytest.raises(InvalidCallbackUrl, match="must use https"):
        callback_url.check("http://127.0.0.1:9000/hook", _settings(callback_allow_hosts=["127.0.0.1"]))


def test_the_error_is_a_422_problem() -> None:
    with pytest.raises(InvalidCallbackUrl) as caught:
        callback_url.check("https://10.0.0.1/", _settings())
    assert caught.value.status == 422
    assert caught.value.type_uri.endswith("/invalid-callback-url")


def test_a_delivery_connects_to_the_address_it_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """`target` pins the POST to the address the check saw (a rebinding after it changes nothing); the Host header
    and TLS's server name stay the URL's own, so the receiver and its certificate are the ones named."""
    import ipaddress

    monkeypatch.setattr(callback_url, "resolve", lambda host, port: [ipaddress.ip_address("93.184.216.34")])
    pinned = callback_url.target("https://hooks.example.com:8443/t?x=1", _settings())
    assert pinned.url == "https://93.184.216.34:8443/t?x=1"
    assert pinned.headers == {"host": "hooks.example.com:8443"}
    assert pinned.extensions == {"sni_hostname": "hooks.example.com"}
    monkeypatch.setattr(callback_url, "resolve", lambda host, port: [ipaddress.ip_address("2606:2800:220:1::1")])
    assert callback_url.target("https://hooks.example.com/t", _settings()).url == "https://[2606:2800:220:1::1]/t"
    # A name that now resolves inside is refused, however it resolved at submit.
    monkeypatch.setattr(callback_url, "resolve", lambda host, port: [ipaddress.ip_address("10.0.0.5")])
    with pytest.raises(InvalidCallbackUrl, match="internal address"):
        callback_url.target("https://hooks.example.com/t", _settings())
    # An allow-listed host is connected to by name, as given.
    allowed = callback_url.target(
        "http://127.0.0.1:9000/t", _settings(callback_allow_http=True, callback_allow_hosts=["127.0.0.1"])
    )
    assert (allowed.url, allowed.headers, allowed.extensions) == ("http://127.0.0.1:9000/t", {}, {})
