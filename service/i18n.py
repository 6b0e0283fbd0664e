"""Chinese and English: the language a request asked for, and the page texts in both."""

from __future__ import annotations

from starlette.requests import Request

LANGS = ("zh", "en")
DEFAULT_LANG = "zh"
COOKIE = "lang"

TEXTS: dict[str, tuple[str, str]] = {
    "site.title": ("健康码", "Health code"),
    "site.tagline": (
        "不汇集任何人的行程，比对病例轨迹，签发健康码",
        "Health codes from matching case movements, without pooling anyone's trajectories",
    ),
    "nav.home": ("首页", "Home"),
    "nav.citizen": ("我的健康码", "My code"),
    "nav.verifier": ("扫码核验", "Scan a code"),
    "nav.venue": ("场所码", "Venue code"),
    "nav.host": ("房东/单位申报", "Host declaration"),
    "nav.commander": ("指挥中心", "Command centre"),
    "lang.switch": ("English", "中文"),
    "home.apps": ("服务", "Services"),
    "app.citizen": ("申领、出示健康码，同行查询，申诉", "Apply for and show your code, check a trip, appeal"),
    "app.verifier": ("卡口离线扫码核验", "Offline code check at a checkpoint"),
    "app.venue": ("场所登记与场所码打印", "Register a venue and print its code"),
    "app.host": ("申报租户与员工", "Declare tenants and staff"),
    "app.commander": ("疫情态势与健康码统计", "The epidemic and the codes, by county"),
    "error.title": ("出错了", "Something went wrong"),
    "error.back": ("返回", "Back"),
}


def negotiate(request: Request) -> str:
    """The request's language: `?lang=`, then the `lang` cookie, then Accept-Language; Chinese by default."""
    asked = request.query_params.get("lang") or request.cookies.get(COOKIE)
    if asked in LANGS:
        return asked
    accept = request.headers.get("accept-language", "").lower()
    if accept.startswith("en"):
        return "en"
    return DEFAULT_LANG


def text(key: str, lang: str) -> str:
    """The text `key` in `lang` (the key itself when missing, so a gap shows instead of breaking a page)."""
    pair = TEXTS.get(key)
    if pair is None:
        return key
    return pair[0] if lang == "zh" else pair[1]
