"""How many tokens a text takes, estimated without a tokenizer (pure, no imports).

Every plan fased makes in tokens (the history that fits a model's window, the size of a
memory chunk) uses this one estimate. Four characters a token holds for English and code
with the tokenizers of today's models; a character outside ASCII takes more: about one
token for Chinese or Japanese with a large model's tokenizer, two with a small English
one's. So each UTF-8 byte past a character's first counts half a token: a Chinese
character (three bytes) 1.25 tokens, a Cyrillic one (two) 0.75, an emoji (four) 1.75.
An estimate too high only keeps less history; one too low makes a model refuse the
request, which the turn then re-plans (fased.loop).
"""

from __future__ import annotations


def estimate(text: str) -> int:
    """The estimated tokens of `text`, with 4 for the message it is part of."""
    chars = len(text)
    if text.isascii():
        return chars // 4 + 4
    extra = len(text.encode("utf-8", "surrogatepass")) - chars
    return (chars + 2 * extra) // 4 + 4
