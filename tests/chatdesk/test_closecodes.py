"""The close codes have one source: the browser's module is generated from chatdesk/closecodes.py."""

from __future__ import annotations

from pathlib import Path

from chatdesk import closecodes

JS_MODULE = Path(closecodes.__file__).parent / "static" / "chatdesk" / "js" / "closecodes.js"


def test_the_browser_module_is_generated_from_the_python_table() -> None:
    assert JS_MODULE.read_text() == closecodes.javascript_module(), (
        "chatdesk/static/chatdesk/js/closecodes.js is stale; regenerate it with "
        "`.venv/bin/python -m chatdesk.closecodes > chatdesk/static/chatdesk/js/closecodes.js`"
    )


def test_every_code_is_in_the_table_once() -> None:
    constants = {
        name: value for name, value in vars(closecodes).items() if name.isupper() and isinstance(value, int)
    }
    assert closecodes.CLOSE_CODES == constants
    assert len(set(constants.values())) == len(constants)
    assert all(4000 <= code < 5000 for code in constants.values())  # the private-use range (RFC 6455 §7.4.2)
    assert set(closecodes.FINAL) <= set(constants.values())


def test_no_script_spells_a_close_code_itself() -> None:
    scripts = JS_MODULE.parent
    for script in scripts.glob("*.js"):
        if script != JS_MODULE:
            text = script.read_text()
            assert not [code for code in closecodes.CLOSE_CODES.values() if str(code) in text], script.name
