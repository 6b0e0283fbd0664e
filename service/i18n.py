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
    "verifier.title": ("扫码核验", "Verify a health code"),
    "verifier.checkpoint": (
        "卡口名称（可选，联网时匿名计数）", "Checkpoint (optional; anonymous counts when online)"
    ),
    "verifier.camera": ("摄像头扫码", "Scan with the camera"),
    "verifier.upload": ("上传图片", "Upload an image"),
    "verifier.check": ("核验", "Verify"),
    "verifier.next": ("下一位", "Next"),
    "lists.loading": ("正在加载信任列表……", "Loading the trust list…"),
    "lists.ok": ("信任列表与吊销列表签名有效", "Trust and revocation lists verified"),
    "lists.failed": ("列表不可用，无法核验", "Lists unusable; cannot verify"),
    "lists.trust": ("信任列表", "trust list"),
    "lists.revocations": ("吊销列表", "revocations"),
    "offline.pending": ("正在准备离线使用……", "Preparing offline use…"),
    "offline.ready": ("已可离线使用", "Ready to work offline"),
    "offline.failed": ("无法离线使用", "Offline use unavailable"),
    "verdict.green": ("绿码 · 通行", "Green · pass"),
    "verdict.yellow": ("黄码", "Yellow"),
    "verdict.red": ("红码", "Red"),
    "verdict.invalid": ("无效", "Invalid"),
    "result.expires": ("有效期至", "Valid until"),
    "reason.not-a-code": ("不是健康码", "Not a health code"),
    "reason.unknown-key": ("签发密钥不在信任列表中", "Unknown signing key"),
    "reason.bad-signature": ("签名无效", "Bad signature"),
    "reason.expired": ("已过期", "Expired"),
    "reason.not-yet-valid": ("尚未生效", "Not yet valid"),
    "reason.revoked": ("已吊销", "Revoked"),
    "reason.no-lists": ("信任列表不可用", "No usable trust list"),
    "reason.no-camera": ("无法打开摄像头", "Camera unavailable"),
    "reason.no-qr": ("图片中没有可识别的二维码", "No readable QR code in the image"),
    "cotravel.title": ("同行查询", "Did a case travel with me?"),
    "cotravel.intro": (
        "查询在本机完成：服务器只知道有人查询过，不知道是哪趟车次。",
        "The check runs on this device: the service learns that a check was made, not which trip.",
    ),
    "cotravel.trip": ("车次/航班", "Train or flight"),
    "cotravel.date": ("乘车日期", "Date"),
    "cotravel.carriage": ("车厢（可选）", "Carriage (optional)"),
    "cotravel.submit": ("查询", "Check"),
    "cotravel.found_trip": ("该车次有确诊或疑似病例乘坐", "A case travelled on this trip"),
    "cotravel.found_carriage": ("您所在车厢有确诊或疑似病例", "A case travelled in your carriage"),
    "cotravel.not_found": ("未发现病例同行", "No case found on this trip"),
    "cotravel.failed": ("查询失败", "The check failed"),
    "citizen.clock": ("当前时间", "Time now"),
    "citizen.expires_in": ("剩余有效时间", "Valid for"),
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
