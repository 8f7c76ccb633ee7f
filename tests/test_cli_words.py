"""What `cx` prints for people is Chinese first, English second, and times are China Standard
Time: the status of the pipeline, an audit's verdict, and an option's time it cannot read."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cx import board, cli, history
from settlement import audit as audit_module
from settlement.audit import AuditReport, Discrepancy
from settlement.pipeline_status import PartitionProgress, PipelineStatus, StalledPartition
from settlement.statements import in_yuan

CHINESE_FIRST = re.compile(r"^[\u4e00-\u9fff]")


def _progress(stage: str, partition: int, lag: int, seen_moving: bool = False) -> PartitionProgress:
    return PartitionProgress(
        stage=stage,
        topic=f"cx.{stage}",
        partition=partition,
        end_offset=10 + lag,
        offset=10,
        lag=lag,
        progressing=lag == 0 or seen_moving,
        idle_ms=4_000 if lag else 0,
        seen_moving=seen_moving,
    )


def test_cx_status_words_each_state_and_stall_chinese_first(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stall = StalledPartition(
        stage="settlement",
        topic="cx.settlement",
        partition=3,
        kind="cannot_apply",
        since_ms=1_795_670_000_000,  # 2026-11-26T13:13:20+08:00
        lag=2,
        detail="constraint failed",
        offset=12,
        event_id="e-1",
        event_type="TradeExecuted",
    )
    status = PipelineStatus(
        checked_ms=1_795_670_060_000,
        stall_seconds=30.0,
        partitions=(
            _progress("risk", 0, 0),
            _progress("matching", 1, 5, seen_moving=True),
            _progress("delivery", 2, 5),
            _progress("settlement", 3, 2),
        ),
        stalls=(stall,),
        unreadable=("cx.events: timed out",),
    )
    cli._print_status(status)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("环节 stage"), lines[0]
    states = [line.split(None, 5)[-1] for line in lines[1:5]]
    assert states == [
        "已追上 caught up",
        "推进中, 4 秒前推进过 moving (4s since it moved)",
        "未见推进, 已落后至少 4 秒 not seen to move (behind for at least 4s)",
        "停滞 STALLED",
    ], lines
    assert lines[5] == "无法读取 unreadable: cx.events: timed out"
    assert lines[6] == (
        "停滞 STALLED since 2026-11-26T13:13:20+08:00: settlement 在 cx.settlement:3 停滞, "
        "延迟 2 条, 在偏移 12 处无法应用事件 e-1 (TradeExecuted) / settlement is stalled in "
        "cx.settlement:3 at offset 12 with lag 2: it cannot apply event e-1 (TradeExecuted): "
        "constraint failed"
    )
    assert CHINESE_FIRST.match(lines[7].strip()), lines[7]


def test_cx_status_says_nothing_is_stalled_chinese_first(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli._print_status(PipelineStatus(0, 30.0, (_progress("risk", 0, 0),), (), ()))
    assert capsys.readouterr().out.splitlines()[-1] == "没有停滞 nothing is stalled"


def test_cx_audit_words_its_verdict_chinese_first(capsys: pytest.CaptureFixture[str]) -> None:
    clean = AuditReport(position=40, events=40, trades=3, orders=7, checkpoints=1)
    history._print_audit("", clean, "all")
    found = AuditReport(
        position=40, events=40, discrepancies=[Discrepancy("trade", "stored twice", (7, 9))]
    )
    history._print_audit("shard 1", found, "ledger")
    history._print_audit("all shards", clean, "all")
    assert capsys.readouterr().out.splitlines() == [
        "已审计 audited 40 个事件 events, 至位置 up to position 40, 7 笔订单 orders, "
        "3 笔成交 trades, 1 个检查点 checkpoints: 无差异 no discrepancies",
        "分片 1 shard 1: 差异 discrepancy [trade] stored twice (事件位置 events at 7, 9)",
        "分片 1 shard 1: 已审计 audited 40 条分录 journal entries, 至位置 up to position 40: "
        "1 处差异 discrepancies",
        "全部分片 all shards: 已审计 audited 40 个事件 events, 至位置 up to position 40, "
        "7 笔订单 orders, 3 笔成交 trades, 1 个检查点 checkpoints: 无差异 no discrepancies",
    ]


@pytest.mark.parametrize(
    ("argv", "option", "digits"),
    [
        (["history", "--since", "2026-12-05 9am"], "--since", "毫秒数"),
        (["history", "--until", "yesterday"], "--until", "毫秒数"),
        (["replay", "--until", "2026-13-05T09:00+08:00"], "--until", "一个位置"),
    ],
)
def test_a_time_cx_cannot_read_is_named_with_the_format_it_expects(
    argv: list[str],
    option: str,
    digits: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CX_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert cli.main(argv) == 2
    said = capsys.readouterr().err
    assert "Invalid isoformat" not in said, said
    assert said.startswith(f"cx {argv[0]}: 参数 {option}: 时间 "), said
    assert "不是带时区的 ISO 8601 时间, 应如 2026-12-05T09:00+08:00" in said, said
    assert digits in said, said


def test_a_time_without_its_offset_is_refused_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CX_DATA_DIR", str(tmp_path))
    assert cli.main(["history", "--since", "2026-12-05T09:00"]) == 2
    assert "缺少时区, 应如 2026-12-05T09:00+08:00" in capsys.readouterr().err


def test_cx_audit_says_amounts_in_yuan_and_its_json_keeps_fen(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What `cx audit` prints for people gives money in 元; `--json` keeps the message in
    fen, as scripts read it."""
    held = Discrepancy(
        "held-cash", "account b1 holds 123456 fen; its open orders need -5 fen", (3,)
    )
    report = AuditReport(position=9, events=9, discrepancies=[held])
    history._print_audit("", report, "all")
    said = capsys.readouterr().out.splitlines()[0]
    assert said == (
        "差异 discrepancy 冻结资金不符 [held-cash] account b1 holds 1,234.56 元; its open orders "
        "need -0.05 元 (事件位置 events at 3)"
    )
    assert "fen" not in said
    assert "123456" not in said
    document = history._audit_document("", report)
    assert document["discrepancies"] == [
        {
            "kind": "held-cash",
            "message": "account b1 holds 123456 fen; its open orders need -5 fen",
            "positions": [3],
        }
    ]


def test_every_amount_an_audit_finds_says_fen_so_people_read_it_in_yuan() -> None:
    """A projection's cash row that differs names each amount's unit: in 元 for people, in
    units for capacity; none is left a bare number to be read as 元."""
    from exchange.domain.accounts import Balance

    found: list[Discrepancy] = []
    audit_module._compare_balances(
        "cash_balances", "fen", {"b1": Balance(100_100, 2_500)}, {"b1": Balance(100_000, 2_500)},
        found,
    )  # fmt: skip
    audit_module._compare_balances(
        "capacity_balances", "units", {("p1", "H100"): Balance(4, 0)}, {}, found
    )
    assert [in_yuan(d.message) for d in found] == [
        "cash_balances shows b1 at available 1,001.00 元, held 25.00 元; the events give "
        "available 1,000.00 元, held 25.00 元",
        "capacity_balances shows p1 in H100 at available 4 units, held 0 units; the events give "
        "available 0 units, held 0 units",
    ]


def test_every_kind_of_discrepancy_an_audit_finds_has_its_chinese_words() -> None:
    source = Path(audit_module.__file__).read_text(encoding="utf-8")
    kinds = set(re.findall(r'Discrepancy\(\s*"([a-z-]+)"', source))
    kinds |= set(re.findall(r'kind, expected = "([a-z-]+)"', source))
    assert len(kinds) > 20, kinds
    assert kinds <= set(history.DISCREPANCY_WORDS), kinds - set(history.DISCREPANCY_WORDS)
    assert all(CHINESE_FIRST.match(words) for words in history.DISCREPANCY_WORDS.values())


def test_cx_replay_tables_are_chinese_first_with_money_in_yuan(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "240")
    document = {
        "position": 12,
        "books": {"H100-80G.GZ.20271201T00": {"bids": [[123_450, 2]], "asks": [[130_000, 1]]}},
        "accounts": {
            "b1": {
                "cash": {"available": 1_234_567, "held": -5},
                "capacity": {},
                "positions": {},
                "open_orders": [],
            }
        },
        "programmes": {},
        "grants": {},
        "events": 12,
        "ts": 1_795_670_000_000,  # 2026-11-26T13:13:20+08:00
        "started_from": None,
        "state_hash": "ab",
        "history_hash": "cd",
    }
    history._print_replay(json.loads(json.dumps(document)))
    said = capsys.readouterr().out
    for words in (
        "位置 12 的订单簿",
        "1,234.50 x 2",
        "1,300.00 x 1",
        "12,345.67",
        "-0.05",
        "资金单位 元",
        "2026-11-26T13:13:20+08:00",
        "状态哈希 state hash: ab",
    ):
        assert words in said, said
    assert "123450" not in said
    assert "1234567" not in said


def test_the_board_shows_prices_in_yuan() -> None:
    assert [board._money(p) for p in (None, 5, 123_456, 100_000_000)] == [
        "-", "0.05", "1,234.56", "1,000,000.00",
    ]  # fmt: skip
