"""The capacity benchmark's baseline: one pjsua2 process that answers calls and records them with
pjsua2's own WAV recorder, playing a greeting from pjsua2's own WAV player.

No hub and no Python on the audio path: Python only answers and tears calls down. The endpoint
is set up as a Switchboard SIP worker's is (sip/endpoint.py: 16 kHz bridge, null sound device,
the same codec priorities, one pjsua2 thread), so that the difference between the two is what
Switchboard's design costs, not a different media configuration.

    python -m bench.baseline_worker --sip-port 5071 --rtp-port 30000 --rtp-ports 100 \
        --recordings DIR --greeting greeting.wav
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

import pjsua2 as pj

from appliance.core.audio import FRAME_MS, SAMPLE_RATE
from sip.endpoint import CODEC_PRIORITIES, MEDIA_QUALITY
from sip.rtp_ports import PortBlock

MAX_CALLS = 4  # the wheel's compiled-in limit, as for the workers


class BaselineCall(pj.Call):
    def __init__(self, worker: BaselineWorker, account: pj.Account, call_id: int):
        super().__init__(account, call_id)
        self.worker = worker
        self.media: list[object] = []  # recorder and player, kept alive while the call is

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        if self.media:
            return
        info = self.getInfo()
        for index, media in enumerate(info.media):
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                audio = self.getAudioMedia(index)
                recorder = pj.AudioMediaRecorder()
                recorder.createRecorder(str(self.worker.recordings / f"{info.callIdString}.wav"))
                audio.startTransmit(recorder)
                player = pj.AudioMediaPlayer()
                player.createPlayer(str(self.worker.greeting))
                player.startTransmit(audio)
                self.media = [recorder, player]

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        if self.getInfo().state == pj.PJSIP_INV_STATE_DISCONNECTED:
            # Let go here, in its own DISCONNECTED callback, as pjsua2 asks: a pj.Call deleted later,
            # once pjsua has given its slot to the next call, hangs that call up (sip/endpoint.py).
            self.media.clear()
            self.worker.calls.discard(self)  # the last reference: this object goes as the callback returns


class BaselineAccount(pj.Account):
    def __init__(self, worker: BaselineWorker):
        super().__init__()
        self.worker = worker

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        call = BaselineCall(self.worker, self, prm.callId)
        self.worker.calls.add(call)
        answer = pj.CallOpParam()
        answer.statusCode = 200
        call.answer(answer)


class BaselineWorker:
    def __init__(self, args: argparse.Namespace):
        self.recordings = Path(args.recordings)
        self.greeting = Path(args.greeting)
        self.calls: set[BaselineCall] = set()
        self.running = True
        ep = self.ep = pj.Endpoint()
        ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.maxCalls = MAX_CALLS
        cfg.logConfig.level = 1
        cfg.logConfig.consoleLevel = 1
        med = cfg.medConfig
        med.clockRate = SAMPLE_RATE
        med.sndClockRate = SAMPLE_RATE
        med.channelCount = 1
        med.audioFramePtime = FRAME_MS
        med.ecTailLen = 0
        med.noVad = True
        med.sndAutoCloseTime = -1
        med.quality = MEDIA_QUALITY
        ep.libInit(cfg)
        transport = pj.TransportConfig()
        transport.port = args.sip_port
        transport.boundAddress = "127.0.0.1"
        ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
        ep.libStart()
        ep.audDevManager().setNullDev()
        for codec in ep.codecEnum2():
            ep.codecSetPriority(codec.codecId, 0)
        for codec, priority in CODEC_PRIORITIES.items():
            ep.codecSetPriority(codec, priority)
        account = pj.AccountConfig()
        account.idUri = f"sip:baseline@127.0.0.1:{args.sip_port}"
        block = PortBlock(args.rtp_port, args.rtp_ports)  # the workers' rule: no pair outside the block
        account.mediaConfig.transportConfig.port = block.start
        account.mediaConfig.transportConfig.portRange = block.port_range
        self.account = BaselineAccount(self)
        self.account.create(account)

    def run(self) -> None:
        while self.running:
            self.ep.libHandleEvents(20)
        self.ep.hangupAllCalls()
        self.ep.libHandleEvents(200)
        self.ep.libDestroy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sip-port", type=int, required=True)
    parser.add_argument("--rtp-port", type=int, required=True)
    parser.add_argument("--rtp-ports", type=int, default=100)
    parser.add_argument("--recordings", required=True)
    parser.add_argument("--greeting", required=True)
    args = parser.parse_args()
    worker = BaselineWorker(args)

    def stop(*_: object) -> None:
        worker.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ready", flush=True)
    worker.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
