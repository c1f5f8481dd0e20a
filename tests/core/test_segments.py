"""SMS segment counting against GSM 03.38 / 3GPP TS 23.038."""

import pytest

from streams.core.segments import GSM7_BASIC, GSM7_EXTENSION, SmsSegments, count_segments

EMOJI = "\U0001F600"  # outside the BMP: a surrogate pair, 2 UTF-16 units


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("", "GSM-7", 0, 1),
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€", "GSM-7", 2, 1),
        ("€" * 80, "GSM-7", 160, 1),
        ("€" * 81, "GSM-7", 162, 2),
        ("a" * 159 + "€", "GSM-7", 161, 2),
        # an escape pair is not split: 152 septets + "€" does not fit in a 153-septet part
        ("a" * 152 + "€" + "a" * 152, "GSM-7", 306, 3),
        ("^{}\\[~]|\f", "GSM-7", 18, 1),
        ("ë", "UCS-2", 1, 1),
        ("ë" * 70, "UCS-2", 70, 1),
        ("ë" * 71, "UCS-2", 71, 2),
        ("ë" * 134, "UCS-2", 134, 2),
        ("ë" * 135, "UCS-2", 135, 3),
        ("a" * 159 + "ë", "UCS-2", 160, 3),
        (EMOJI, "UCS-2", 2, 1),
        (EMOJI * 35, "UCS-2", 70, 1),
        (EMOJI * 36, "UCS-2", 72, 2),
        # a surrogate pair is not split: 66 units + emoji does not fit in a 67-unit part
        ("ë" * 66 + EMOJI + "ë" * 66, "UCS-2", 134, 3),
        ("Storing: we werken eraan.\nStatus: https://status.example.nl", "GSM-7", 59, 1),
    ],
)
def test_count(text, encoding, units, segments):
    result = count_segments(text)
    assert (result.encoding, result.units, result.segments) == (encoding, units, segments)
    assert result.chars == len(text)


@pytest.mark.parametrize("ch", list("éèùìòÇØøÅåÄÖÑÜ§¿äöñüàßÉÆæ£$¥@_¤¡ΔΩ"))
def test_in_gsm7_basic(ch):
    assert ch in GSM7_BASIC
    assert count_segments(ch) == SmsSegments("GSM-7", 1, 1, 1)


@pytest.mark.parametrize("ch", ["ë", "ï", "ó", "á", "ç", "’", "“", "–", "\u00a0", "\u202f", "`"])
def test_forces_ucs2(ch):
    assert ch not in GSM7_BASIC and ch not in GSM7_EXTENSION
    assert count_segments("Hallo " + ch).encoding == "UCS-2"


def test_alphabet_sizes():
    assert len(GSM7_BASIC) == 127  # 128 positions minus the escape
    assert len(GSM7_EXTENSION) == 10
    assert not GSM7_BASIC & GSM7_EXTENSION


def test_frozen():
    result = count_segments("hoi")
    with pytest.raises(AttributeError):
        result.segments = 2  # type: ignore[misc]
