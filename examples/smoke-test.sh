#!/bin/sh
# A recovery plan's script action: Site Recovery gives a runbook its context; ec2azure gives a
# script the same JSON on standard input (and in the file $RECOVERY_PLAN_CONTEXT).
# This one checks that every machine of the plan that failed over has a VM, and says so.
ctx=$(cat)
echo "plan context: $ctx" | tr -d '\n' | cut -c1-400
echo
case "$ctx" in
  *'"RoleName": ""'*) echo "a machine has no VM yet" >&2; exit 1 ;;
esac
echo "smoke test passed"
