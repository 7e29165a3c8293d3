#!/usr/bin/env python3
"""Writes the seed inputs of tests/fuzz/corpus/<protocol>/seed-* and
tests/fuzz/corpus/session/seed-*.

The format is the one fuzz_dialog.c reads: one byte for the listener
(0 STARTTLS required, 1 STARTTLS optional, 2 implicit TLS), then records
of a header byte (bit 7: 0 client, 1 backend; bits 0-6: length) and up to
127 bytes. Each seed is a realistic dialogue; inputs found by fuzzing are
kept beside them under other names (crash-*, regress-*). Run from anywhere:
python3 tests/fuzz/make_corpus.py
"""
import os

REQUIRED, OPTIONAL, IMPLICIT = 0, 1, 2


def encode(listener, steps):
    out = bytearray([listener])
    for side, data in steps:
        data = data.encode("latin-1") if isinstance(data, str) else data
        flag = 0x80 if side == "B" else 0
        if not data:
            out.append(flag)
        for i in range(0, len(data), 127):
            piece = data[i:i + 127]
            out.append(flag | len(piece))
            out += piece
    return bytes(out)


IMAP_HELLO = ("* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE "
              "IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN] Dovecot ready.\r\n")
POP3_HELLO = "+OK Dovecot ready.\r\n"
SMTP_HELLO = "220 backend.example ESMTP Postfix\r\n"

IMAP = {
    "login": (REQUIRED, [
        ("C", "a001 CAPABILITY\r\n"), ("C", "a002 LOGIN alice secret\r\n"),
        ("C", "a003 STARTTLS\r\n"), ("B", IMAP_HELLO),
        ("C", "a004 CAPABILITY\r\n"),
        ("B", "* CAPABILITY IMAP4rev1 SASL-IR ID IDLE LITERAL+ STARTTLS "
              "AUTH=PLAIN AUTH=SCRAM-SHA-256-PLUS XCLIENT\r\n"
              "a004 OK Pre-login capabilities listed.\r\n"),
        ("C", "a005 LOGIN alice secret\r\n"),
        ("B", "a005 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"),
        ("C", "a006 SELECT INBOX\r\n")]),
    "authenticate": (IMPLICIT, [
        ("B", "* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] ready.\r\n"),
        ("C", "a STARTTLS\r\n"), ("C", "b AUTHENTICATE PLAIN\r\n"),
        ("B", "+ \r\n"), ("C", "AGFsaWNlAHNlY3JldA==\r\n"),
        ("B", "b NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"),
        ("C", "c AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
        ("B", "c OK Logged in\r\n")]),
    "literals": (REQUIRED, [
        ("C", "a ID {5}\r\n"), ("C", "b STARTTLS\r\nc NOOP\r\n"),
        ("B", IMAP_HELLO), ("C", "d LOGIN {5}\r\n"),
        ("B", "+ Ready for literal data\r\n"), ("C", "alice {6+}\r\n"),
        ("C", "sec\nt\r\n"),
        ("C", "e ID (\"name\" {3+}\r\nabc \"x-originating-ip\" \"1\")\r\n"),
        ("B", "d OK Logged in\r\n")]),
    "id-pipelined": (REQUIRED, [
        ("C", "a ID (\"x-originating-ip\" \"1.2.3.4\")\r\nb NOOP\r\n"
              "c STARTTLS\r\nd LOGIN a b\r\n"),
        ("B", "* PREAUTH Logged in as alice\r\n")]),
    "lockstep": (IMPLICIT, [
        ("B", "* OK Dovecot ready.\r\n"),
        ("C", "a ID NIL\r\nb CAPABILITY\r\nc LOGIN u p\r\n"),
        ("B", "* ID (\"name\" {11}\r\na OK Done\r\n)\r\na OK ID done.\r\n"),
        ("B", "* CAPABILITY IMAP4rev1 STARTTLS\r\nb OK [CAPABILITY "
              "IMAP4rev1 XCLIENT] done.\r\n"),
        ("B", "c OK Logged in\r\n")]),
    "bad": (REQUIRED, [
        ("C", "* NOOP\r\n+ x\r\na{1 NOOP\r\n"), ("C", "a NOOP\nb x\r\n")]),
}

POP3 = {
    "user-pass": (REQUIRED, [
        ("C", "CAPA\r\n"), ("C", "USER alice\r\n"), ("C", "STLS\r\n"),
        ("B", POP3_HELLO), ("C", "CAPA\r\n"),
        ("B", "+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\n"
              "AUTH-RESP-CODE\r\nSTLS\r\nUSER\r\nSASL PLAIN "
              "SCRAM-SHA-1-PLUS\r\n..x\r\n.\r\n"),
        ("C", "USER alice\r\nPASS secret\r\n"), ("B", "+OK\r\n"),
        ("B", "+OK Logged in.\r\n"), ("C", "STAT\r\n")]),
    "auth": (IMPLICIT, [
        ("B", "+OK ready <1896.697170952@dbc.mtview.ca.us>\r\n"),
        ("C", "STLS\r\nXCLIENT ADDR=1.2.3.4\r\nAUTH\r\n"),
        ("B", "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n"), ("C", "AUTH PLAIN\r\n"),
        ("B", "+ \r\n"), ("C", "AGFsaWNlAHNlY3JldA==\r\n"),
        ("B", "+OK Logged in.\r\n")]),
    "apop": (IMPLICIT, [
        ("B", "+OK ready <1.2@x>\r\n"),
        ("C", "APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n"),
        ("B", "-ERR [AUTH] no\r\n"), ("C", "XOIP 1.2.3.4\r\nQUIT\r\n")]),
    "pipelined": (REQUIRED, [
        ("C", "CAPA\r\nSTLS\r\nUSER a\r\n"), ("B", "-ERR [SYS/TEMP] busy\r\n")]),
    "bad": (REQUIRED, [("C", "USER a\r\nPASS b\r\nAPOP x y\r\nAUTH\r\n"
                             "NOOP\r\nCAPA\n")]),
}

SMTP = {
    "submission": (REQUIRED, [
        ("C", "EHLO client.example\r\n"),
        ("C", "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"), ("C", "STARTTLS\r\n"),
        ("B", SMTP_HELLO), ("C", "EHLO client.example\r\n"),
        ("B", "250-backend.example\r\n250-PIPELINING\r\n250-SIZE 52428800\r\n"
              "250-AUTH PLAIN LOGIN SCRAM-SHA-256-PLUS\r\n250-XCLIENT NAME\r\n"
              "250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n"),
        ("C", "AUTH LOGIN\r\n"), ("B", "334 VXNlcm5hbWU6\r\n"),
        ("C", "YWxpY2U=\r\n"), ("B", "334 UGFzc3dvcmQ6\r\n"),
        ("C", "c2VjcmV0\r\n"), ("B", "235 2.7.0 Authentication successful\r\n"),
        ("C", "MAIL FROM:<a@x>\r\n")]),
    "mx-plaintext": (OPTIONAL, [
        ("C", "EHLO mta.example\r\n"), ("C", "AUTH PLAIN x\r\n"),
        ("C", "MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\n"),
        ("B", "220-backend.example ESMTP\r\n220 Postfix\r\n"),
        ("B", "250-backend.example\r\n250 PIPELINING\r\n"),
        ("B", "250 2.1.0 Ok\r\n")]),
    "mx-vrfy": (OPTIONAL, [
        ("C", "HELO mta.example\r\nVRFY x\r\n"), ("B", SMTP_HELLO),
        ("B", "250 backend.example\r\n"), ("B", "252 2.0.0 x\r\n"),
        ("C", "STARTTLS\r\nAUTH LOGIN\r\nMAIL FROM:<>\r\n")]),
    "smtps": (IMPLICIT, [
        ("B", "220-backend.example ESMTP\r\n220 Postfix\r\n"),
        ("C", "EHLO c\r\nSTARTTLS\r\nXFORWARD ADDR=1.2.3.4\r\n"),
        ("B", "250 backend.example\r\n"),
        ("C", "MAIL FROM:<a@x>\r\nDATA\r\nSTARTTLS\r\n.\r\n")]),
    "injection": (REQUIRED, [
        ("C", "EHLO t\r\n"), ("C", "STARTTLS\r\nEHLO commandinjection\r\n"),
        ("B", "421 4.3.2 Service not available\r\n")]),
    "bad": (REQUIRED, [("C", "MAIL FROM:<a@x>\r\nXCLIENT ADDR=1\r\nHELO\r\n"
                             "STARTTLS x\r\nEHLO x\rNOOP\r\n")]),
    "mx-data-smuggling": (OPTIONAL, [
        ("C", "EHLO mta.example\r\nMAIL FROM:<a@x>\r\n"),
        ("B", SMTP_HELLO), ("B", "250-backend.example\r\n250 CHUNKING\r\n"),
        ("B", "250 2.1.0 Ok\r\n"), ("C", "RCPT TO:<b@x>\r\nDATA\r\n"),
        ("B", "250 2.1.5 Ok\r\n"), ("B", "354 End data\r\n"),
        ("C", "Subject: x\r\n\r\n..dot\r\nXCLIENT ADDR=6.6.6.6\r\n.\r\n"),
        ("B", "250 2.0.0 Ok: queued\r\n"),
        ("C", "RSET\r\nXCLIENT ADDR=6.6.6.6\r\nMAIL FROM:<a@x>\r\n"),
        ("B", "250 2.0.0 Ok\r\n"), ("B", "250 2.1.0 Ok\r\n"),
        ("C", "RCPT TO:<b@x>\r\nDATA\r\n"), ("B", "250 Ok\r\n"),
        ("B", "354 go\r\n"), ("C", "x\n.\r\nXCLIENT ADDR=6.6.6.6\r\n")]),
    "bdat": (IMPLICIT, [
        ("B", SMTP_HELLO), ("C", "EHLO c\r\nBDAT 3\r\nabcBDAT 5 LAST\r\n"),
        ("B", "250-backend.example\r\n250-CHUNKING\r\n250 8BITMIME\r\n"),
        ("B", "503 5.5.1 Error: need MAIL command\r\n"),
        ("C", "XCLIEBDAT 0 LAST\r\nBDAT x\r\n"),
        ("B", "250 Ok\r\n"), ("B", "250 Ok\r\n")]),
}

IMAP["literal-capabilities"] = (IMPLICIT, [
    ("B", "* OK [CAPABILITY IMAP4rev1 LITERAL-] ready\r\n"),
    ("C", "a LOGIN {5+}\r\nalice {4097+}\r\n"),
    ("B", "* CAPABILITY IMAP4rev2\r\n"), ("C", "b NOOP {1+}\r\nx\r\n")])
IMAP["literal-none"] = (IMPLICIT, [
    ("B", "* OK ready\r\n"), ("C", "a NOOP {3+}\r\nabc\r\n")])

# fuzz_session.c: listeners, ops, and the indexes of its canned lines.
IMAP143, SMTP25, POP3S, IMAPS, SMTPS, POP3110 = range(6)
(CDATA, CLINE, CREAD, CTLS, CKEY, CCLOSE, BACCEPT, BDATA, BLINE, BREAD,
 BCLOSE, TURN, WAIT) = range(13)


def op(o, arg=0, extra=b""):
    return bytes([(o << 4) | arg]) + extra


def data(o, payload):
    payload = payload.encode("latin-1") if isinstance(payload, str) \
        else payload
    out = b""
    for i in range(0, len(payload), 255):
        piece = payload[i:i + 255]
        out += op(o, 0, bytes([len(piece)]) + piece)
    return out


def line(o, index, times=1):
    return op(o, index, bytes([times]))


def session(listener, *ops):
    return bytes([listener]) + b"".join(ops)


T = op(TURN, 15)
SESSION = {
    "imap143-reply-flood": session(
        IMAP143, op(CREAD, 0), line(CLINE, 0, 255), line(CLINE, 0, 255), T),
    "imap143-starttls-login-relay": session(
        IMAP143, line(CLINE, 1), T, op(CTLS), T, T, op(BACCEPT), T,
        line(BLINE, 0), T, line(CLINE, 4), T, line(BLINE, 3), T,
        data(CDATA, "b SELECT INBOX\r\n" * 40), T,
        op(BREAD, 0), data(CDATA, "x" * 4000), line(CLINE, 6, 200), T,
        op(CREAD, 0), line(BLINE, 14, 255), line(BLINE, 14, 255), T,
        op(CCLOSE, 0), T, op(BCLOSE, 0), T),
    "imaps-literal-chain-stalled-backend": session(
        IMAPS, T, op(BACCEPT), line(BLINE, 0), T, op(BREAD, 0),
        line(CLINE, 5), line(CLINE, 6, 255), line(CLINE, 6, 255), T),
    "imaps-literal-not-advertised": session(
        IMAPS, T, op(BACCEPT), line(BLINE, 12), T, line(CLINE, 5), T),
    "imaps-keyupdate-before-login": session(
        IMAPS, T, op(BACCEPT), line(BLINE, 0), T, op(CREAD, 0),
        op(CKEY, 15), T, op(CKEY, 15), T, op(CKEY, 15), T, op(CKEY, 15), T),
    "imaps-keyupdate-in-relay": session(
        IMAPS, T, op(BACCEPT), line(BLINE, 0), T, line(CLINE, 4), T,
        line(BLINE, 3), T, op(CREAD, 0), op(CKEY, 15), T, op(CKEY, 15), T,
        line(BLINE, 14, 255), op(CKEY, 15), T),
    "smtp25-plaintext-transaction": session(
        SMTP25, line(CLINE, 7), T, line(CLINE, 8), T, op(BACCEPT), T,
        line(BLINE, 2), T, line(BLINE, 5), T, line(BLINE, 8), T,
        line(BLINE, 8), T, line(BLINE, 6), T, line(CLINE, 10), T,
        line(CLINE, 9), T, line(BLINE, 8), T, line(CLINE, 12), T,
        line(BLINE, 8), T, line(CLINE, 15), T, line(BLINE, 15), T),
    "smtp25-smuggling": session(
        SMTP25, line(CLINE, 7), line(CLINE, 8), T, op(BACCEPT), T,
        line(BLINE, 2), line(BLINE, 5), line(BLINE, 8), line(BLINE, 8),
        line(BLINE, 6), T, line(CLINE, 11), T),
    "smtp25-starttls-then-filter": session(
        SMTP25, line(CLINE, 7), line(CLINE, 2), T, op(CTLS), T, T,
        op(BACCEPT), T, line(BLINE, 2), T, line(CLINE, 7), T,
        line(BLINE, 5), T, line(CLINE, 8), T, line(BLINE, 8, 3), T,
        line(BLINE, 6), T, line(CLINE, 10, 100), T),
    "smtps-bdat-and-auth": session(
        SMTPS, T, op(BACCEPT), line(BLINE, 2), T, line(CLINE, 7), T,
        line(BLINE, 5), T, line(CLINE, 12), T, line(BLINE, 8), T,
        line(CLINE, 13), T, line(BLINE, 7), T, data(CDATA, "y" * 3000), T),
    "pop3s-silent-backend": session(
        POP3S, T, op(BACCEPT), op(WAIT), op(WAIT), op(WAIT), T),
    "pop3s-stalled-reply": session(
        POP3S, T, op(BACCEPT), line(BLINE, 1), T, line(CLINE, 15), T,
        op(WAIT), op(WAIT), op(WAIT), T),
    "imap143-noop-trickle": session(
        IMAP143, line(CLINE, 0), op(WAIT), line(CLINE, 0), op(WAIT),
        line(CLINE, 0), op(WAIT), T),
    "pop3110-stls-garbage": session(
        POP3110, line(CLINE, 3), T, data(CDATA, "GET / HTTP/1.0\r\n\r\n"), T),
    "imaps-client-gone-mid-greeting": session(
        IMAPS, T, op(CCLOSE, 1), T, op(BACCEPT), T, line(BLINE, 0), T),
}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    for proto, seeds in (("imap", IMAP), ("pop3", POP3), ("smtp", SMTP)):
        d = os.path.join(here, "corpus", proto)
        os.makedirs(d, exist_ok=True)
        for name, (listener, steps) in seeds.items():
            with open(os.path.join(d, "seed-" + name), "wb") as f:
                f.write(encode(listener, steps))
    d = os.path.join(here, "corpus", "session")
    os.makedirs(d, exist_ok=True)
    for name, raw in SESSION.items():
        with open(os.path.join(d, "seed-" + name), "wb") as f:
            f.write(raw)


if __name__ == "__main__":
    main()
