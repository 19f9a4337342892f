"""The one stop-string / UTF-8 hold-back streamer (blt.streaming.TextStreamer) that the BLT and the MLX backend
share: stops split across chunks, partial characters held back, nothing after a stop, any chunking alike."""

from __future__ import annotations

import random

from blt.streaming import TextStreamer


def _run(streamer: TextStreamer, chunks) -> tuple[list[str], bool]:
    pieces, stopped = [], False
    for c in chunks:
        piece, stopped = streamer.push(c)
        pieces.append(piece)
        if stopped:
            break
    if not stopped:
        pieces.append(streamer.flush())
    return pieces, stopped


def test_a_stop_split_across_chunks_is_found_and_nothing_after_it_is_emitted():
    s = TextStreamer(stop=["STOP"])
    pieces, stopped = _run(s, ["Hello S", "T", "OP and more", "after"])
    assert stopped and "".join(pieces) == "Hello "
    assert pieces[:2] == ["Hello ", ""]  # "S", then "ST" held back: they may begin the stop
    assert s.push("more text") == ("", True) and s.flush() == ""  # after a stop, nothing comes out
    assert bytes(s.released) == b"Hello "


def test_only_a_possible_stop_prefix_is_held_back():
    pieces, stopped = _run(TextStreamer(stop=["STOP"]), ["a", "S", "T", "O", "b", " end"])
    assert pieces == ["a", "", "", "", "STOb", " end", ""] and not stopped


def test_a_partial_utf8_character_is_held_back_and_a_cut_off_one_dropped():
    s = TextStreamer()
    data = "你好".encode()
    assert [s.push(b)[0] for b in data] == ["", "", "你", "", "", "好"]  # bytes as ints, one at a time
    assert s.push("😀".encode()[:2]) == ("", False)
    assert s.flush() == ""  # the model never finished that character: nothing rather than U+FFFD
    assert TextStreamer().push(b"ok\xffok") == ("ok\ufffdok", False)  # an invalid byte is a replacement


def test_a_stop_that_ends_inside_a_character_is_matched_on_bytes():
    pieces, stopped = _run(TextStreamer(stop=["ध्य"]), [bytes([b]) for b in "नमो ध्यान".encode()])
    assert stopped and "".join(pieces) == "नमो "


def test_the_stop_that_completes_first_wins():
    assert _run(TextStreamer(stop=["abd", "c"]), ["abcabd"]) == (["ab"], True)
    assert _run(TextStreamer(stop=["\n\n", "END"]), ["line1\nline2\n", "\nmore"]) == (["line1\nline2", ""], True)


def test_any_chunking_gives_the_same_text():
    text = "Hello 👋 world. नमस्ते STOP never shown"
    want = _run(TextStreamer(stop=["STOP", "zz"]), [text])
    data = text.encode()
    rng = random.Random(7)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 12)))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        pieces, stopped = _run(TextStreamer(stop=["STOP", "zz"]), chunks)
        assert ("".join(pieces), stopped) == ("".join(want[0]), want[1]) == ("Hello 👋 world. नमस्ते ", True)


def test_the_mlx_tokenizer_streams_what_decode_gives():
    """ChatTokenizer.streaming (the tokenizers library's streaming decoder) piece by piece equals one decode of
    all the ids: multi-byte characters split over tokens, double spaces, special tokens skipped."""
    import mlx.core as mx

    from rag.backends.chat_tokenizer import tokenizer_from_gguf
    from rag.backends.gguf import bundled_model_path

    path = bundled_model_path()
    tok = tokenizer_from_gguf(mx.load(str(path), return_metadata=True)[1], path)
    for text in (" Hello wörld 👋 नमस्ते, 你好!  two  spaces\n\nnew", "<|im_start|>user hi<|im_end|> x"):
        ids = tok.encode(text, special=True)
        step = tok.streaming()
        pieces = [step(i) for i in ids]
        assert "".join(pieces) == tok.decode(ids)
        assert "\ufffd" not in "".join(pieces) and "" in pieces  # a character split over tokens waited
