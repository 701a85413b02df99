"""Pure broker rules: does a verified PoA allow this exact action?"""

from broker.domain.decision import Verdict, decide

__all__ = ["Verdict", "decide"]
