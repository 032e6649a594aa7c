"""sipp scenarios written inline for the SIP edge's tests, as XML strings.

UAC scenarios here go through a record-routing proxy (the edge): they keep the route set
from the 200 (rrs="true") and send ACK and BYE to [next_url] with [routes].
"""

from __future__ import annotations

from pathlib import Path


def write_scenario(directory: Path, name: str, xml: str) -> Path:
    path = Path(directory) / f"{name}.xml"
    path.write_text(xml)
    return path



# A call through a record-routing proxy. [hold_ms] is how long the call stays up; the
# INVITE carries a forged trunk header the proxy must strip.
UAC_CALL = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="call through a record-routing proxy">
  <send retrans="500">
    <![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:caller@[local_ip]:[local_port]>
Max-Forwards: 70
X-Switchboard-Trunk: forged-by-caller
Subject: edge test
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
  <send>
    <![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
[routes]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: <sip:caller@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="[hold_ms]"/>
  <send retrans="500">
    <![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
[routes]
Call-ID: [call_id]
CSeq: 2 BYE
Contact: <sip:caller@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"""


def uac_call(hold_ms: int = 0) -> str:
    return UAC_CALL.replace("[hold_ms]", str(hold_ms))


def uac_rejected(code: int, header: str | None = None, value_regexp: str = ".+") -> str:
    """An INVITE that must get final `code` (and `header` matching `value_regexp`), then the ACK."""
    check = ""
    if header:
        check = (
            f'<action><ereg regexp="{value_regexp}" search_in="hdr" header="{header}:" '
            f'check_it="true" assign_to="seen"/></action>'
        )
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="INVITE answered {code}">
  <send retrans="500">
    <![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:caller@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="{code}">{check}</recv>
  <send>
    <![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
[last_Via:]
From: sipp <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>
  <!-- ACKs are not answered: linger briefly so a retransmitted final reply is absorbed. -->
  <pause milliseconds="200"/>
  {'<Reference variables="seen"/>' if header else ''}
</scenario>
"""


def _uas(name: str, body: str) -> str:
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="{name}">
{body}
</scenario>
"""


def _reply(status: str, sdp: bool = False, retrans: bool = False, dialog: bool = True) -> str:
    """A response to the last request.

    `dialog`: answering the INVITE, so add our To-tag and copy Record-Route, as a UAS
    behind a proxy must; off for in-dialog requests, which already carry both.
    """
    body = """Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000""" if sdp else "Content-Length: 0\n"
    attrs = ' retrans="500"' if retrans else ""
    to = "[last_To:];tag=[pid]SIPpTag01[call_number]" if dialog else "[last_To:]"
    rr = "\n[last_Record-Route:]" if dialog else ""
    return f"""  <send{attrs}>
    <![CDATA[
SIP/2.0 {status}
[last_Via:]
[last_From:]
{to}
[last_Call-ID:]
[last_CSeq:]{rr}
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
{body}
    ]]>
  </send>"""


# Answers the call, waits for the caller's BYE.
UAS_ANSWER = _uas("answer", "\n".join([
    '  <recv request="INVITE" crlf="true"/>',
    _reply("180 Ringing"),
    _reply("200 OK", sdp=True, retrans=True),
    '  <recv request="ACK" crlf="true"/>',
    '  <recv request="BYE"/>',
    _reply("200 OK", dialog=False),
]))


def uas_reject(status: str = "503 Service Unavailable") -> str:
    """Turns every INVITE down with `status`, as a full or broken worker would."""
    return _uas("reject", "\n".join([
        '  <recv request="INVITE" crlf="true"/>',
        _reply(status, retrans=True),
        '  <recv request="ACK"/>',
    ]))


# Rings until the caller gives up: 200 to the CANCEL, 487 to the INVITE.
UAS_RING_UNTIL_CANCEL = _uas("ring until cancelled", "\n".join([
    '  <recv request="INVITE" crlf="true">',
    '    <action><ereg regexp="[0-9]+" search_in="hdr" header="CSeq:" assign_to="invite_cseq"/></action>',
    "  </recv>",
    _reply("180 Ringing"),
    '  <recv request="CANCEL"/>',
    _reply("200 OK", dialog=False),
    """  <send retrans="500">
    <![CDATA[
SIP/2.0 487 Request Terminated
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
CSeq: [$invite_cseq] INVITE
Content-Length: 0

    ]]>
  </send>""",
    '  <recv request="ACK"/>',
]))


def uac_cancel() -> str:
    """An INVITE given up once it rings: CANCEL, its 200, the INVITE's 487, the ACK."""
    return """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="cancel while ringing">
  <send retrans="500">
    <![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag02[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:caller@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180"/>
  <send retrans="500">
    <![CDATA[
CANCEL sip:[service]@[remote_ip]:[remote_port] SIP/2.0
[last_Via:]
From: sipp <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag02[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 CANCEL
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
  <recv response="487"/>
  <send>
    <![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
[last_Via:]
From: sipp <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag02[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="200"/>
</scenario>
"""


# Answers, then hangs up itself after [hangup_ms]: a worker ending the call.
UAS_ANSWER_THEN_HANG_UP = _uas("answer then hang up", "\n".join([
    '  <recv request="INVITE" crlf="true" rrs="true"/>',
    _reply("180 Ringing"),
    _reply("200 OK", sdp=True, retrans=True),
    '  <recv request="ACK">',
    "    <action>",
    '      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="caller"/>',
    '      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="callee"/>',
    "    </action>",
    "  </recv>",
    '  <pause milliseconds="300"/>',
    """  <send retrans="500">
    <![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From:[$callee]
To:[$caller]
[routes]
Call-ID: [call_id]
CSeq: 1 BYE
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>""",
    '  <recv response="200"/>',
]))


def uac_call_hung_up_by_callee() -> str:
    """A call the far end hangs up: the caller answers its BYE."""
    head, _ = UAC_CALL.split('  <pause milliseconds="[hold_ms]"/>')
    return head + """  <recv request="BYE"/>
  <send>
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

    ]]>
  </send>
</scenario>
"""


def uac_in_dialog(method: str, request_uri: str, route: str, code: int, *,
                  from_tag: str = "[pid]SIPpTag03[call_number]") -> str:
    """A request claiming to be inside a dialog (a To-tag and a Route naming the proxy), sent
    to `request_uri`: as an attacker uses a loose router to reach a host of its choosing. It
    must get final `code`; an INVITE's is ACKed with the same Route, as RFC 3261 17.1.1.3 says.

    A chosen Call-ID goes in sipp's -cid_str: sipp matches replies to calls by its own [call_id].
    """
    if method == "INVITE":
        body = """Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000"""
    else:
        body = "Content-Type: text/plain\nContent-Length: [len]\n\nhello from nowhere"
    ack = f"""  <send>
    <![CDATA[
ACK {request_uri} SIP/2.0
[last_Via:]
From: sipp <sip:caller@[local_ip]:[local_port]>;tag={from_tag}
[last_To:]
Route: {route}
Call-ID: [call_id]
CSeq: 2 ACK
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>""" if method == "INVITE" else ""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="in-dialog {method} answered {code}">
  <send retrans="500">
    <![CDATA[
{method} {request_uri} SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:caller@[local_ip]:[local_port]>;tag={from_tag}
To: <{request_uri}>;tag=forged[call_number]
Route: {route}
Call-ID: [call_id]
CSeq: 2 {method}
Contact: <sip:caller@[local_ip]:[local_port]>
Max-Forwards: 70
{body}
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="{code}"/>
{ack}
  <pause milliseconds="200"/>
</scenario>
"""


def uac_call_via_proxy(request_uri: str) -> str:
    """A worker placing a call: to `request_uri` through the proxy (a Route naming it, as
    pjsua2's outbound proxy adds); the far end answers and hangs up, the caller answers its BYE.
    """
    scenario = uac_call_hung_up_by_callee()
    scenario = scenario.replace("INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0",
                                f"INVITE {request_uri} SIP/2.0")
    scenario = scenario.replace("To: <sip:[service]@[remote_ip]:[remote_port]>", f"To: <{request_uri}>")
    return scenario.replace("X-Switchboard-Trunk: forged-by-caller", "Route: <sip:[remote_ip]:[remote_port];lr>")


def uac_via_proxy_rejected(method: str, request_uri: str, code: int) -> str:
    """An out-of-dialog request to `request_uri` through the proxy (a Route naming it) that must get final `code`."""
    return uac_in_dialog(method, request_uri, "<sip:[remote_ip]:[remote_port];lr>", code).replace(
        ";tag=forged[call_number]", "")


def uac_with_credentials(code: int | None = None, hold_ms: int = 0) -> str:
    """An INVITE challenged with 407, sent again with credentials (run sipp with -au/-ap).

    `code` None: the call goes through and the caller hangs up after `hold_ms`; otherwise the
    second INVITE must get final `code` (then the ACK).
    """
    invite = """  <send retrans="500">
    <![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag04[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: {cseq} INVITE
Contact: <sip:caller@[local_ip]:[local_port]>
Max-Forwards: 70
{auth}Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
    ]]>
  </send>"""

    def ack(cseq: int) -> str:
        return f"""  <send>
    <![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
[last_Via:]
From: sipp <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag04[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: {cseq} ACK
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>"""

    steps = [
        invite.format(cseq=1, auth=""),
        '  <recv response="100" optional="true"/>',
        '  <recv response="407" auth="true"/>',
        ack(1),
        invite.format(cseq=2, auth="[authentication]\n"),
        '  <recv response="100" optional="true"/>',
    ]
    if code is not None:
        steps += [f'  <recv response="{code}"/>', ack(2), '  <pause milliseconds="200"/>']
    else:
        # The rest of an ordinary call through the record-routing proxy, CSeq numbers moved on by one.
        rest = UAC_CALL.split('  <recv response="100" optional="true"/>', 1)[1].rsplit("</scenario>", 1)[0]
        rest = rest.replace("CSeq: 1 ACK", "CSeq: 2 ACK").replace("CSeq: 2 BYE", "CSeq: 3 BYE")
        rest = rest.replace("SIPpTag00", "SIPpTag04").replace("[hold_ms]", str(hold_ms))
        steps.append(rest)
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="INVITE with digest credentials">
{chr(10).join(steps)}
</scenario>
"""
