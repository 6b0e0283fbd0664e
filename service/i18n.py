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
    "cmd.login": ("操作员登录", "Operator login"),
    "cmd.username": ("用户名", "User name"),
    "cmd.password": ("密码", "Password"),
    "cmd.logout": ("退出", "Log out"),
    "cmd.csrf": ("表单已过期，请重新提交", "The form has expired; please submit it again"),
    "cmd.login_missing": ("请输入用户名和密码", "Enter a user name and a password"),
    "cmd.login_wrong": ("用户名或密码错误", "Wrong user name or password"),
    "cmd.login_locked": (
        "登录失败次数过多，请 15 分钟后再试",
        "Too many failed logins; try again in 15 minutes",
    ),
    "cmd.epoch": ("数据日期", "Epoch of"),
    "cmd.previous": ("上一期", "previous"),
    "cmd.no_epoch": ("尚无已完成的批次", "No finished epoch yet"),
    "cmd.refresh": ("自动刷新", "refreshes every"),
    "cmd.green": ("绿码", "Green"),
    "cmd.yellow": ("黄码", "Yellow"),
    "cmd.red": ("红码", "Red"),
    "cmd.since_previous": ("较上期", "since previous"),
    "cmd.first_epoch": ("首期", "first epoch"),
    "cmd.by_county": ("各区县健康码", "Codes by county"),
    "cmd.county": ("区县", "County"),
    "cmd.code": ("代码", "Code"),
    "cmd.total": ("合计", "Total"),
    "cmd.change": ("变化", "Change"),
    "cmd.other": ("外地", "Outside the city"),
    "cmd.county_note": (
        "按身份证号登记地（GB/T 2260）统计；变化为与上一批次相比。",
        "By the county an id number is registered in (GB/T 2260); change against the previous epoch.",
    ),
    "cmd.map": ("基站风险地图", "Cells by risk"),
    "cmd.map_note": ("（匹配到的病例时空格数）", "(matched case cell-hours)"),
    "cmd.curve": ("流行曲线", "Epidemic curve"),
    "cmd.by_onset": ("按发病日期", "by onset date"),
    "cmd.by_report": ("按报告日期", "by report date"),
    "cmd.cases": ("病例", "Cases"),
    "cmd.case": ("编号", "Case"),
    "cmd.subject": ("证件号", "Id"),
    "cmd.status": ("状态", "Status"),
    "cmd.confirmed": ("确诊", "confirmed"),
    "cmd.suspected": ("疑似", "suspected"),
    "cmd.onset": ("发病", "Onset"),
    "cmd.reported": ("报告", "Reported"),
    "cmd.risk_regions": ("风险地区", "Risk regions"),
    "cmd.region": ("地区", "Region"),
    "cmd.level": ("等级", "Level"),
    "cmd.level_high": ("高风险", "high"),
    "cmd.level_medium": ("中风险", "medium"),
    "cmd.from": ("起", "From"),
    "cmd.to": ("止", "To"),
    "cmd.appeals": ("申诉", "Appeals"),
    "cmd.open": ("待处理", "open"),
    "cmd.reason": ("原因", "Reason"),
    "cmd.when": ("时间", "When"),
    "cmd.uphold": ("支持", "Uphold"),
    "cmd.reject": ("驳回", "Reject"),
    "cmd.appeal_upheld": ("已支持", "upheld"),
    "cmd.appeal_rejected": ("已驳回", "rejected"),
    "cmd.refusals": ("未通过核验的申请", "Refused applicants"),
    "cmd.revocations": ("已撤销的健康码", "Revoked codes"),
    "cmd.checkpoints": ("卡口扫码统计", "Checkpoint scans"),
    "cmd.checkpoint": ("卡口", "Checkpoint"),
    "cmd.today": ("当日", "Latest day"),
    "cmd.results": ("结果", "Results"),
    "cmd.venues_note": (
        "场所登记统计待场所数据接入后显示。",
        "Venue check-in counts appear once the venues agency reports them.",
    ),
    "cmd.none": ("无", "None"),
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
