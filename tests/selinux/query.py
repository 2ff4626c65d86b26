#!/usr/bin/python3
"""Answer many policy questions with one load of the policy.

sesearch and seinfo reload the whole binary policy (about 0.7 s) for
every question; this asks the same setools queries they use, once loaded.
Reads one question a line from stdin, prints "ok   ..." or "FAIL ...":

  allow SRC TGT CLASS PERM [BOOL]   a rule giving PERM, found through the
                                    attributes SRC and TGT are in (as
                                    sesearch does); unconditional unless
                                    BOOL is named, then under BOOL only
  type_transition SRC TGT CLASS DEFAULT
  members ATTR TYPE...              ATTR holds exactly these types
  bool NAME true|false              a boolean and its default
  role ROLE TYPE                    ROLE may hold TYPE
  portcon PROTO PORT TYPE           the label of one port
  newtypes BEFORE_POLICY ATTR...    types not in BEFORE_POLICY carry no
                                    attribute but these, their module's
                                    own (pam_adopt_*) and generated ones
Usage: query.py POLICY < questions
"""

import re
import sys

import setools
from setools.exception import RuleNotConditional


def conditional_of(rule):
    try:
        return str(rule.conditional), rule.conditional_block
    except RuleNotConditional:
        return None, None


def ask_allow(policy, src, tgt, cls, perm, boolean=None):
    query = setools.TERuleQuery(
        policy, ruletype=["allow"], source=src, target=tgt, tclass=[cls], perms={perm}
    )
    for rule in query.results():
        cond, block = conditional_of(rule)
        if boolean is None and cond is None:
            return True
        if boolean is not None and cond == boolean and block:
            return True
    return False


def ask_transition(policy, src, tgt, cls, default):
    query = setools.TERuleQuery(
        policy, ruletype=["type_transition"], source=src, target=tgt, tclass=[cls], default=default
    )
    return any(True for _ in query.results())


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    policy = setools.SELinuxPolicy(sys.argv[1])
    failed = 0
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        kind, args = words[0], words[1:]
        what = " ".join(words)
        ok, why = False, ""
        if kind == "allow":
            ok = ask_allow(policy, *args)
            why = "no such rule"
        elif kind == "type_transition":
            ok = ask_transition(policy, *args)
            why = "no such type_transition"
        elif kind == "members":
            attr = policy.lookup_typeattr(args[0])
            got = sorted(str(t) for t in attr.expand())
            ok = got == sorted(args[1:])
            why = "it holds " + " ".join(got)
        elif kind == "bool":
            found = [b for b in policy.bools() if str(b) == args[0]]
            got = str(found[0].state).lower() if found else "<absent>"
            ok = got == args[1]
            why = "default is " + got
        elif kind == "role":
            role = policy.lookup_role(args[0])
            ok = args[1] in {str(t) for t in role.types()}
            why = "not in the role"
        elif kind == "portcon":
            proto, port, want = args
            # The narrowest range is the one the kernel uses.
            narrow = sorted(
                (p for p in policy.portcons() if str(p.protocol) == proto and p.ports.low <= int(port) <= p.ports.high),
                key=lambda p: p.ports.high - p.ports.low,
            )
            got = str(narrow[0].context.type_) if narrow else "<none>"
            ok = got == want
            why = "labelled " + got
        elif kind == "newtypes":
            before = {str(t) for t in setools.SELinuxPolicy(args[0]).types()}
            allowed = set(args[1:])
            bad = []
            for t in policy.types():
                if str(t) in before:
                    continue
                for a in t.attributes():
                    name = str(a)
                    if name in allowed or name.startswith("pam_adopt_") or re.search(r"_typeattr_\d+$", name):
                        continue
                    bad.append(f"{t} in {name}")
            ok = not bad
            why = "; ".join(bad)
            what = "new types carry only ordinary attributes"
        else:
            why = "unknown question"
        if ok:
            print(f"ok   {what}")
        else:
            print(f"FAIL {what}: {why}")
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
