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
    "citizen.title": ("我的健康码", "My health code"),
    "citizen.intro": (
        "用手机号登录，为本人或家人申领健康码；身份由公安人口库以隐私求交核验，不上传任何行程。",
        "Sign in with your phone to apply for yourself or a family member; your identity is checked "
        "against the police register by private set intersection, and no trip of yours is uploaded.",
    ),
    "citizen.phone": ("手机号", "Phone number"),
    "citizen.send_otp": ("获取验证码", "Send me a code"),
    "citizen.otp": ("短信验证码", "One-time code from the SMS"),
    "citizen.otp_sent": ("验证码已发送至", "A one-time code was sent to"),
    "citizen.sign_in": ("登录", "Sign in"),
    "citizen.sign_out": ("退出登录", "Sign out"),
    "citizen.signed_in_as": ("已登录：", "Signed in as "),
    "citizen.other_phone": ("换一个手机号", "Use another phone"),
    "citizen.apply": ("申领健康码", "Apply for a code"),
    "citizen.relation": ("为谁申领", "For whom"),
    "citizen.relation.self": ("本人", "Myself"),
    "citizen.relation.family": ("家人", "A family member"),
    "citizen.name": ("姓名", "Name"),
    "citizen.subject_id": ("身份证号", "ID number"),
    "citizen.birth_date": ("出生日期", "Birth date"),
    "citizen.member_phone": ("持码人手机号", "Holder's phone number"),
    "citizen.symptoms": ("近14天症状（自行申报）", "Symptoms in the last 14 days (self-declared)"),
    "symptom.fever": ("发热", "Fever"),
    "symptom.cough": ("咳嗽", "Cough"),
    "symptom.fatigue": ("乏力", "Fatigue"),
    "symptom.breath": ("呼吸困难", "Shortness of breath"),
    "symptom.taste": ("嗅觉或味觉减退", "Loss of smell or taste"),
    "citizen.submit": ("提交申领", "Apply"),
    "citizen.my_codes": ("我申领的健康码", "Codes I applied for"),
    "citizen.no_codes": ("还没有申领记录。", "No applications yet."),
    "citizen.refused": ("未通过身份核验", "Identity not confirmed"),
    "citizen.show": ("出示", "Show"),
    "citizen.issued": ("签发时间", "Issued"),
    "citizen.valid_until": ("有效期至", "Valid until"),
    "citizen.expired": ("已过期，下一轮赋码后更新", "Expired: a new code comes with the next epoch"),
    "citizen.revoked": ("已撤销", "Revoked"),
    "citizen.time_now": ("当前时间", "Time now"),
    "citizen.live_note": ("截图无效：时间实时走动", "A screenshot is not a code: the clock runs live"),
    "citizen.reasons": ("赋码原因", "Why this colour"),
    "citizen.no_reasons": ("未发现与病例的交集", "No contact with a case on record"),
    "citizen.green_from": ("预计转绿日期", "Turns green on"),
    "citizen.appeal": ("申诉", "Appeal"),
    "citizen.appeal_help": (
        "如认为赋码有误，请说明理由，指挥中心将复核。",
        "If you think this colour is wrong, say why; the command centre will review it.",
    ),
    "citizen.appeal_reason": ("申诉理由", "Reason"),
    "citizen.appeal_submit": ("提交申诉", "Send the appeal"),
    "citizen.appeals": ("我的申诉", "My appeals"),
    "citizen.appeal_sent": ("申诉已提交，等待复核。", "Your appeal was received and awaits review."),
    "citizen.back": ("返回我的健康码", "Back to my codes"),
    "colour.green": ("绿码", "Green"),
    "colour.yellow": ("黄码", "Yellow"),
    "colour.red": ("红码", "Red"),
    "appeal.open": ("待复核", "Open"),
    "appeal.upheld": ("已支持", "Upheld"),
    "appeal.rejected": ("已驳回", "Rejected"),
    "reason.CASE": ("您是报告的病例", "You are a reported case"),
    "reason.HOUSEHOLD": ("与病例同住一户", "You share a household with a case"),
    "reason.SAME_CARRIAGE": ("与病例同乘一节车厢", "You travelled in the same carriage as a case"),
    "reason.SAME_ROOM": ("与病例同住一间客房", "You stayed in the same hotel room as a case"),
    "reason.CELL_HOURS": ("与病例在同一区域停留数小时", "You spent hours in the same area as a case"),
    "reason.HIGH_RISK_REGION": ("到访过高风险地区", "You were in a high-risk region"),
    "reason.SAME_TRIP": ("与病例同乘一趟列车或航班", "You took the same train or flight as a case"),
    "reason.SAME_HOTEL": ("与病例同住一家酒店", "You stayed in the same hotel as a case"),
    "reason.CELL_HOUR": ("与病例在同一区域停留约一小时", "You spent an hour in the same area as a case"),
    "reason.MEDIUM_RISK_REGION": ("到访过中风险地区", "You were in a medium-risk region"),
    "refusal.NOT_IN_REGISTER": (
        "人口库中没有与该姓名、身份证号和出生日期一致的人员",
        "No person with this name, ID number and birth date is in the population register",
    ),
    "refusal.BAD_ID": ("身份证号无效", "The ID number is not valid"),
    "refusal.INCOMPLETE": ("信息不完整", "The declaration is incomplete"),
    "error.csrf": ("表单已失效，请刷新页面后重试", "This form has expired; reload the page and try again"),
    "error.not_found": ("未找到该健康码", "No such code among yours"),
    "error.sign_in": ("请先登录", "Please sign in first"),
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
