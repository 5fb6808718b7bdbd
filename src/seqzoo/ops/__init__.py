"""Pure tensor functions, each with a slow reference twin used by the tests."""

from seqzoo.ops.cayley import cayley_from_inverse, cayley_inverse, cayley_reference, neumann_inverse_update
from seqzoo.ops.fixed_point import (
    SolverStats,
    anderson,
    anderson_reference,
    broyden,
    broyden_reference,
    fixed_point_iteration,
    fixed_point_iteration_reference,
)
from seqzoo.ops.fixed_point import solve as fixed_point_solve
from seqzoo.ops.hippo import hippo_legs, hippo_n_eigh, hippo_normal, s5_init
from seqzoo.ops.lstm_recurrence import lstm_sequence, lstm_sequence_reference
from seqzoo.ops.scan import linear_scan, linear_scan_reference
from seqzoo.ops.stack_dp import (
    StackDP,
    full_stack_dp,
    limited_stack_dp,
    limited_stack_dp_step,
    stack_dp_brute_force,
    stack_dp_reference,
)
from seqzoo.ops.stratification_stack import stratification_reference, stratification_update
from seqzoo.ops.superposition_stack import superposition_reference, superposition_update

__all__ = ["lstm_sequence", "lstm_sequence_reference"]
__all__ += ["hippo_legs", "hippo_n_eigh", "hippo_normal", "linear_scan", "linear_scan_reference", "s5_init"]
__all__ += ["StackDP", "limited_stack_dp", "limited_stack_dp_step", "full_stack_dp", "stack_dp_brute_force",
            "stack_dp_reference", "stratification_reference", "stratification_update", "superposition_reference",
            "superposition_update"]
__all__ += ["cayley_from_inverse", "cayley_inverse", "cayley_reference", "neumann_inverse_update"]
__all__ += ["SolverStats", "anderson", "anderson_reference", "broyden", "broyden_reference", "fixed_point_iteration",
            "fixed_point_iteration_reference", "fixed_point_solve"]
