"""GB/T 2260 region codes the simulated city uses: its six county-level divisions and the outside cities,
with their Chinese and English names (the dashboard's labels; a subject id's first six digits are one)."""

from __future__ import annotations

COUNTIES: dict[str, tuple[str, str]] = {
    "411202": ("湖滨区", "Hubin District"),
    "411203": ("陕州区", "Shanzhou District"),
    "411221": ("渑池县", "Mianchi County"),
    "411224": ("卢氏县", "Lushi County"),
    "411281": ("义马市", "Yima"),
    "411282": ("灵宝市", "Lingbao"),
}
"""The city's (Sanmenxia's) counties, in code order."""

OUTSIDE: dict[str, tuple[str, str]] = {
    "420100": ("武汉市", "Wuhan"),
    "410100": ("郑州市", "Zhengzhou"),
    "410300": ("洛阳市", "Luoyang"),
    "610100": ("西安市", "Xi'an"),
    "110100": ("北京市", "Beijing"),
}
"""Cities outside it that travellers come from or go to (and risk regions may name)."""

OTHER = "other"
"""The bucket for a code that names no county of the city."""


def region_name(code: str, lang: str = "zh") -> str:
    """The region's name in `lang` ("zh" or "en"); the code itself when the table does not know it."""
    pair = COUNTIES.get(code) or OUTSIDE.get(code)
    if pair is None:
        return code
    return pair[0] if lang == "zh" else pair[1]


def county_of(subject_id: str) -> str:
    """The county a subject id is registered in (its GB/T 11643 address code), or OTHER outside the city."""
    prefix = subject_id[:6]
    return prefix if prefix in COUNTIES else OTHER
