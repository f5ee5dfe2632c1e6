import pytest

from crnn.charset import Charset


def test_blank_is_last_class():
    charset = Charset()
    assert charset.num_classes == 37
    assert charset.blank == 36


def test_normalize_lowercases_and_drops_characters_outside_the_charset():
    assert Charset().normalize("Hello, World-42!") == "helloworld42"


def test_encode_decode_round_trip():
    charset = Charset()
    ids = charset.encode("crnn2015")
    assert ids[:2] == [12, 27]
    assert charset.decode(ids) == "crnn2015"


def test_encode_rejects_unknown_character():
    with pytest.raises(ValueError, match="'!'"):
        Charset().encode("a!")


def test_repeated_characters_are_refused():
    with pytest.raises(ValueError, match="repeated"):
        Charset("abca")


def test_encode_bytes_matches_encode():
    charset = Charset()
    assert list(charset.encode_bytes("crnn2015")) == charset.encode("crnn2015")
    with pytest.raises(ValueError, match="'!'"):
        charset.encode_bytes("a!")


def test_normalize_keeps_characters_of_a_cased_charset_and_drops_others():
    charset = Charset("aBé")
    assert charset.normalize("AaBbé€") == "aBé"
    assert charset.normalize("") == ""
