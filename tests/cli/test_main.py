import re
import subprocess
import sys

from iotnas import __version__


def test_version(cli):
    code, out, _ = cli("--version")
    assert code == 0
    assert out.strip() == f"iotnas {__version__}"


def test_help_lists_every_command(cli):
    code, out, _ = cli("--help")
    assert code == 0
    for command in ("init", "search", "status", "show", "spaces", "formats", "train", "eval", "latency", "agent",
                    "report", "export"):
        assert re.search(rf"^\W*{command}\b", out, re.MULTILINE), f"'iotnas --help' does not list {command}"


def test_unknown_command_is_one_clean_line_and_exit_2(cli):
    code, out, err = cli("no-such-command")
    assert code == 2
    assert err.startswith("iotnas: error:")
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_console_script_exit_code_is_real():
    proc = subprocess.run(
        [sys.executable, "-m", "iotnas", "no-such-command"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
