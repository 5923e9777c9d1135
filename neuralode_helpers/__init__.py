"""neuralode_helpers: the small package behind the Neural ODE notebook series.

Solvers, the adjoint method, models, test problems, training, plots and widgets; each module
has one job. The names below are the public API.
"""

from .adjoint import odeint_adjoint
from .classifiers import (
    AugmentedNODE,
    ODEBlock,
    ODENetClassifier,
    ResidualBlock,
    ResNetClassifier,
    count_parameters,
)
from .cnf import (
    CNF,
    CNFField,
    FlowFit,
    PlanarFlow,
    exact_divergence,
    fit_flow,
    hutchinson_divergence,
    standard_normal_logprob,
)
from .datasets import (
    cubic_spiral,
    irregular_indices,
    nested_circles,
    spiral_family,
    two_circles,
    two_moons,
)
from .diagnostics import (
    GradientCost,
    cuda_peak_bytes,
    measure_gradient,
    reconstruction_error,
    relative_error,
    saved_tensor_bytes,
)
from .errors import SolverError
from .events import NoEventError, odeint_event
from .explorers import (
    AdjointPass,
    ExactAdjoint,
    StepRecord,
    adjoint_pass,
    exact_adjoint,
    oscillator_matrix,
    record_steps,
    toy_steps,
)
from .latent import (
    GRUForecaster,
    LatentODE,
    RecognitionGRU,
    elbo,
    gather_times,
    gaussian_log_likelihood,
    normal_kl,
)
from .models import LinearODE, ODENet
from .plotting import (
    plot_adjoint_pass,
    plot_fit,
    plot_gradient_check,
    plot_loss,
    plot_nfe,
    plot_residual,
    plot_steps,
)
from .problems import linear_solution, random_stable_matrix, toy_dynamics, toy_solution
from .regularisers import (
    RNODE,
    BoundedField,
    RegularisedCNFField,
    RegularisedField,
    cnf_initial_state,
    cnf_nll,
    initial_state,
    jacobian_frobenius,
    kinetic_energy,
    rademacher,
    sample_end_time,
)
from .solvers import METHODS, SolveStats, Stats, odeint
from .training import (
    TrainResult,
    WindowedField,
    fit_curves,
    fit_mse,
    load_model,
    predict,
    regularised_window_loss,
    save_model,
    train,
    train_cnf,
    window_loss,
)
from .widgets import AdjointExplorer, FitExplorer, StepSizeExplorer

__version__ = "0.1.0"

__all__ = [
    "cubic_spiral", "irregular_indices", "nested_circles", "spiral_family", "two_circles",
    "two_moons", "GRUForecaster", "LatentODE", "RecognitionGRU", "elbo", "gather_times",
    "gaussian_log_likelihood", "normal_kl", "AugmentedNODE", "ODEBlock", "ODENetClassifier",
    "ResidualBlock", "ResNetClassifier", "count_parameters", "CNF", "CNFField", "PlanarFlow",
    "exact_divergence", "hutchinson_divergence", "standard_normal_logprob",
    "METHODS", "GradientCost", "LinearODE", "ODENet", "SolveStats", "SolverError", "Stats",
    "TrainResult", "WindowedField", "cuda_peak_bytes", "fit_curves", "fit_mse",
    "linear_solution", "load_model", "measure_gradient", "odeint", "odeint_adjoint", "predict",
    "random_stable_matrix", "reconstruction_error", "relative_error", "save_model",
    "saved_tensor_bytes", "toy_dynamics", "toy_solution", "train", "window_loss",
    "FitExplorer", "plot_fit", "plot_gradient_check", "plot_loss", "plot_nfe", "plot_residual",
    "RNODE", "BoundedField", "RegularisedField", "initial_state", "jacobian_frobenius",
    "kinetic_energy", "rademacher", "sample_end_time", "regularised_window_loss",
    "AdjointExplorer", "StepSizeExplorer", "AdjointPass", "ExactAdjoint", "StepRecord",
    "adjoint_pass", "exact_adjoint", "oscillator_matrix", "record_steps", "toy_steps",
    "plot_adjoint_pass", "plot_steps", "FlowFit", "fit_flow", "RegularisedCNFField",
    "cnf_initial_state", "cnf_nll", "train_cnf", "NoEventError", "odeint_event",
]
