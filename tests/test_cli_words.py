"""What `cx` prints for people is Chinese first, English second, and times are China Standard
Time: the status of the pipeline, an audit's verdict, and an option's time it cannot read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cx import cli, history
from settlement.audit import AuditReport, Discrepancy
from settlement.pipeline_status import PartitionProgress, PipelineStatus, StalledPartition

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
        "分片 1 shard 1: 差异 discrepancy [trade] stored twice (events at 7, 9)",
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
