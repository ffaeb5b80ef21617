// WebSocket close codes (SPEC §4). Generated from chatdesk/closecodes.py: do not edit, regenerate with
//   .venv/bin/python -m chatdesk.closecodes > chatdesk/static/chatdesk/js/closecodes.js

export const CLOSE = Object.freeze({
  "BAD_REQUEST": 4400,
  "NOT_AUTHENTICATED": 4401,
  "FORBIDDEN_ORIGIN": 4403,
  "NOT_FOUND": 4404,
  "TOO_SLOW": 4408,
  "NO_AGENT": 4409,
  "AGENT_UNREACHABLE": 4502
});

// Codes after which reconnecting cannot help.
export const FINAL_CLOSES = new Set([CLOSE.NOT_AUTHENTICATED, CLOSE.FORBIDDEN_ORIGIN, CLOSE.NOT_FOUND]);
