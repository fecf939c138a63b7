"""Network policy through sprites-py, unchanged: get, update, a refused
update changes nothing, and the box's resolver follows the rules."""

from __future__ import annotations

import pytest
from sprites import Sprite
from sprites.exceptions import SpriteError
from sprites.types import NetworkPolicy, PolicyRule

from conftest import box_fixture

BOX = "sdk-policy"
box = box_fixture(BOX)

# A name the box's resolver must refuse: no query for it leaves the host.
DENIED = "denied.bothy-sdk.invalid"


def test_a_fresh_sprite_has_no_rules(box: Sprite) -> None:
    assert box.get_network_policy().rules == []


def test_update_and_get_round_trip(box: Sprite) -> None:
    policy = NetworkPolicy(
        rules=[
            PolicyRule(domain="bothy-sdk.invalid", action="deny"),
            PolicyRule(include="debian"),
            PolicyRule(domain="*.Example.com", action="allow"),
        ]
    )
    box.update_network_policy(policy)
    got = box.get_network_policy()
    assert got.rules == [
        PolicyRule(domain="bothy-sdk.invalid", action="deny"),
        PolicyRule(include="debian"),
        PolicyRule(domain="*.example.com", action="allow"),
    ]
    out = box.command(
        "sh", "-c", f"getent hosts {DENIED} >/dev/null && echo resolved || echo refused"
    ).output()
    assert out.decode().strip() == "refused"


def test_an_invalid_policy_is_400_and_changes_nothing(box: Sprite) -> None:
    before = box.get_network_policy()
    # Sprite.update_network_policy reports any status but 204 as SpriteError.
    with pytest.raises(SpriteError) as e:
        box.update_network_policy(
            NetworkPolicy(rules=[PolicyRule(domain="example.com", action="block")])
        )
    assert "status 400" in str(e.value)
    assert "invalid_request" in str(e.value)
    assert box.get_network_policy() == before
