"""Object-store faults: rules on the targeted nodes' own S3 fault proxies
(`target.s3_proxy(node)`, a `nemeses.s3_proxy.S3FaultProxy`). Starting one
adds a rule on each target's proxy; stopping removes exactly that rule, so
other faults on the same proxy stay in force."""
from __future__ import annotations

from nemeses.base import Fault
from nemeses.s3_proxy import OPS, Rule, parse_latency, parse_ops


class _S3Fault(Fault):
    requires = "s3_proxy"
    kind = ""

    def __init__(self, db, *, ops=None, prefix: str = "", rate: float | None = None, body_contains: str = "",
                 **rule):
        super().__init__(db)
        if rate is None:
            rate = self.default_rate
        # Validated now, so a bad option is refused before the run starts.
        self.rule = Rule(self.kind, float(rate), parse_ops(ops), prefix, body_contains=str(body_contains),
                         **self._rule_options(**rule))
        self._active: dict[str, list[int]] = {}

    default_rate = 1.0

    def _rule_options(self, **rule) -> dict:
        return rule

    def start(self, targets):
        for t in targets:
            rule_id = self.db.s3_proxy(t).add(self.rule)
            self._active.setdefault(t, []).append(rule_id)
        return self.rule.describe()

    def stop(self, targets):
        for t in targets:
            for rule_id in self._active.pop(t, []):
                self.db.s3_proxy(t).remove(rule_id)


class S3SlowFault(_S3Fault):
    """Added latency before each selected request (default: a long tail,
    median 100 ms, p99 2 s)."""
    name, kind = "s3-slow", "latency"

    def _rule_options(self, latency="tail:100ms:2s"):
        return {"latency": parse_latency(latency)}


class S3ErrorFault(_S3Fault):
    """`503 SlowDown` (or `500 InternalError`) answered by the proxy for a
    fraction of the selected requests; none reach S3."""
    name, kind = "s3-error", "error"
    default_rate = 0.5

    def _rule_options(self, status: int = 503):
        return {"status": int(status)}


class S3ResetFault(_S3Fault):
    """The connection reset before the request reaches S3."""
    name, kind = "s3-reset", "reset"
    default_rate = 0.3


class S3HangFault(_S3Fault):
    """The request neither forwarded nor answered until the client gives up;
    released (reset) by the heal."""
    name, kind = "s3-hang", "hang"
    default_rate = 0.3


class S3AmbiguousFault(_S3Fault):
    """Writes applied by S3 whose answer is lost (connection reset, or
    `answer="500"`: an error the SDK retries). Default: write operations."""
    name, kind = "s3-ambiguous", "ambiguous"
    default_rate = 0.3

    def __init__(self, db, *, ops="write", **kw):
        super().__init__(db, ops=ops, **kw)

    def _rule_options(self, answer: str = "reset"):
        return {"answer": answer}


S3_FAULTS = {f.name: f for f in (S3SlowFault, S3ErrorFault, S3ResetFault, S3HangFault, S3AmbiguousFault)}
__all__ = ["S3_FAULTS", "OPS", *(f.__name__ for f in S3_FAULTS.values())]
