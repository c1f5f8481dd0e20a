from __future__ import annotations

import logging

import pytest

from streams.privacy import MaskingFilter, mask, mask_email, mask_phone


@pytest.mark.parametrize("text, hidden, kept", [
    ("+31612345678", "12345", "+316"),
    ("call +31 6 1234 5678 now", "1234 5", "call"),
    ("mail jan.jansen@example.nl", "jan.jansen", "@example.nl"),
    ("to=+31698765432 email=a.b@example.com", "987654", "email=a***@example.com"),
])
def test_mask_hides_the_identifying_part(text, hidden, kept):
    masked = mask(text)
    assert hidden not in masked and kept in masked


def test_mask_leaves_ordinary_text_and_ids_alone():
    assert mask("order ORD-2026-004711 for C1001 at 2026-11-25T14:00:00+01:00") == \
        "order ORD-2026-004711 for C1001 at 2026-11-25T14:00:00+01:00"


def test_helpers():
    assert mask_phone("+31612345678") == "+316******78"
    assert mask_email("sanne@example.nl") == "s***@example.nl"


def test_logging_filter_masks_arguments(caplog):
    logger = logging.getLogger("forewarn.test")
    caplog.handler.addFilter(MaskingFilter())
    with caplog.at_level(logging.INFO):
        logger.info("sent to %s and %s", "+31612345678", "sanne@example.nl")
    assert "+31612345678" not in caplog.text and "sanne@" not in caplog.text
    assert "+316******78" in caplog.text
