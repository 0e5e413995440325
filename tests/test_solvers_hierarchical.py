"""Hierarchical solver: the marginal evidence against a dense Gaussian, and agreement with analytic."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import scipy.linalg
import xarray as xr
from scipy.stats import multivariate_normal
from test_core import small_problem
from threadpoolctl import threadpool_limits

from assim import Problem, solve
from assim.covariance import DiagonalCovariance, to_dense
from assim.solvers.hierarchical import HierarchicalConfig, MarginalDensity, MarginalEvidence, build_model


@pytest.fixture(autouse=True)
def single_thread_blas():
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def labelled(problem: Problem, seed: int = 0) -> Problem:
    """The problem with random site categories and sites (three sites, two categories)."""
    rng = np.random.default_rng(seed)
    obs = xr.Dataset(
        coords={
            "category": ("obs", rng.choice(["mbl", "tower"], problem.m)),
            "site": ("obs", rng.choice(["A", "B", "C"], problem.m)),
        }
    )
    return replace(problem, obs=obs)


@pytest.mark.parametrize("groups", ["global", "region"])
@pytest.mark.parametrize("form", ["state", "observation"])
def test_marginal_evidence_is_the_dense_gaussian_density(groups: str, form: str) -> None:
    p = labelled(small_problem(seed=0, n_obs=60))
    check_evidence(p, groups, form)


@pytest.mark.parametrize("form", ["eigen", "state", "observation"])
def test_single_category_evidence_forms(form: str) -> None:
    """One prior group and one mismatch category: the O(n) eigen form is the same density."""
    p = small_problem(seed=1, n_obs=80)
    one = xr.Dataset(coords={"category": ("obs", np.full(p.m, "mbl")), "site": ("obs", np.full(p.m, "A"))})
    check_evidence(replace(p, obs=one), "global", form)
    with pytest.raises(ValueError, match="form 'eigen' needs one prior-scale group"):
        MarginalEvidence(labelled(p), "global", form="eigen")


def check_evidence(p: Problem, groups: str, form: str) -> None:
    ev = MarginalEvidence(p, groups, offsets=True, form=form)
    rng = np.random.default_rng(1)
    log_s, log_t, offset = (rng.normal(0, 0.3, k) for k in (ev.groups.size, ev.categories.size, ev.sites.size))
    s = np.exp(log_s)[ev.group_index]
    r = p.R.diagonal() * np.exp(2 * log_t)[ev.category_index]
    H, B = to_dense(p.H), to_dense(p.B) * np.outer(s, s)
    site = np.searchsorted(ev.sites, p.obs["site"].values)
    reference = multivariate_normal(H @ p.x_prior + offset[site], H @ B @ H.T + np.diag(r)).logpdf(p.y)
    assert ev.log_evidence(log_s, log_t, offset) == pytest.approx(reference, rel=1e-10)
    # x | theta: the analytic posterior of the rescaled problem
    mean, cov, draw = ev.conditional(log_s, log_t, offset, np.random.default_rng(2))
    rescaled = Problem(p.state, p.x_prior, _Dense(B), p.H, p.y - offset[site], DiagonalCovariance(r))
    exact = solve(rescaled)
    np.testing.assert_allclose(mean, exact.mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(cov, exact.covariance, atol=1e-10 * np.abs(exact.covariance).max())
    # without the covariance: the same mean and, from the same random numbers, the same draw
    mean_only, no_cov, same_draw = ev.conditional(log_s, log_t, offset, np.random.default_rng(2), covariance=False)
    assert no_cov is None
    np.testing.assert_allclose(mean_only, mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(same_draw, draw, rtol=1e-8, atol=1e-10)


class _Dense:
    """A dense SPD matrix with the LinearOperator bits the analytic solver uses."""

    def __init__(self, matrix: np.ndarray):
        self.matrix, self.shape = matrix, matrix.shape

    def todense(self) -> np.ndarray:
        return self.matrix

    def diagonal(self) -> np.ndarray:
        return np.diag(self.matrix)


@pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS")
@pytest.mark.parametrize(("form", "groups"), [("state", "region"), ("observation", "region"), ("eigen", "global")])
def test_pymc_model_density_is_the_marginal_evidence(form: str, groups: str) -> None:
    """The PyTensor graph behind pm.Potential gives the numpy evidence plus the LogNormal hyperpriors."""
    from scipy.stats import lognorm, norm

    p = labelled(small_problem(seed=0, n_obs=60))
    if form == "eigen":  # one mismatch category
        p = replace(p, obs=p.obs.assign_coords(category=("obs", np.full(p.m, "mbl"))))
    config = HierarchicalConfig(prior_groups=groups, offset_sd_ppm=0.5)
    ev = MarginalEvidence(p, groups, offsets=True, form=form)
    model, _ = build_model(p, config, ev)
    rng = np.random.default_rng(2)
    prior_scale = np.exp(rng.normal(0, 0.2, ev.groups.size))
    mismatch = np.exp(rng.normal(0, 0.2, ev.categories.size))
    offset = rng.normal(0, 0.3, ev.sites.size)
    point = {"prior_scale_log__": np.log(prior_scale), "mismatch_scale_log__": np.log(mismatch), "offset": offset}
    jacobian = np.log(prior_scale).sum() + np.log(mismatch).sum()  # log transform of the positive scales
    expected = (
        ev.log_evidence(np.log(prior_scale), np.log(mismatch), offset)
        + lognorm(0.5).logpdf(prior_scale).sum()
        + lognorm(0.5).logpdf(mismatch).sum()
        + norm(0, 0.5).logpdf(offset).sum()
        + jacobian
    )
    assert float(model.compile_logp()(point)) == pytest.approx(expected, rel=1e-9)
    # the numpy density nutpie samples is the same function of (log scales, offsets)
    density = MarginalDensity(ev, config)
    theta = np.r_[np.log(prior_scale), np.log(mismatch), offset]
    assert density.logp(theta)[0] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("form", "groups"), [("state", "region"), ("observation", "region"), ("eigen", "global")])
def test_marginal_density_gradient_is_the_finite_difference(form: str, groups: str) -> None:
    p = labelled(small_problem(seed=0, n_obs=60))
    if form == "eigen":
        p = replace(p, obs=p.obs.assign_coords(category=("obs", np.full(p.m, "mbl"))))
    density = MarginalDensity(
        MarginalEvidence(p, groups, offsets=True, form=form),
        HierarchicalConfig(offset_sd_ppm=0.5, trace_surrogate=False),
    )
    theta = np.random.default_rng(3).normal(0, 0.2, density.ndim)
    _, gradient = density.logp(theta)
    step = 1e-6
    central = [
        (density.logp(theta + step * e)[0] - density.logp(theta - step * e)[0]) / (2 * step) for e in np.eye(theta.size)
    ]
    np.testing.assert_allclose(gradient, central, rtol=1e-6, atol=1e-6 * np.abs(central).max())


def surrogate_problem() -> Problem:
    """State form (n = 132 <= m = 200), two mismatch categories, three sites."""
    return labelled(small_problem(seed=1, years=1, n_obs=200))


def test_precision_traces_are_the_log_det_derivatives_and_the_surrogate_keeps_the_value() -> None:
    config = HierarchicalConfig(offset_sd_ppm=0.5)
    ev = MarginalEvidence(surrogate_problem(), "region", offsets=True)
    assert ev.form == "state"
    # traces = -1/2 d log det M / d(log s, log t), against finite differences of slogdet
    rng = np.random.default_rng(4)
    lam = rng.normal(0, 0.2, ev.groups.size + ev.categories.size)

    def log_det(lam: np.ndarray) -> float:
        split = ev.groups.size
        return np.linalg.slogdet(ev._state_precision(lam[:split], np.exp(-2 * lam[split:])))[1]

    step = 1e-5
    central = [-0.5 * (log_det(lam + step * e) - log_det(lam - step * e)) / (2 * step) for e in np.eye(lam.size)]
    np.testing.assert_allclose(ev.precision_traces(lam[: ev.groups.size], lam[ev.groups.size :]), central, rtol=1e-6)

    surrogate = MarginalDensity(ev, config)
    exact = MarginalDensity(ev, replace(config, trace_surrogate=False))
    assert surrogate.trace_surrogate and not exact.trace_surrogate
    chol = np.linalg.cholesky(surrogate.mode_precision)
    for radius in (1.0, 3.0):  # Laplace standard deviations from the mode
        z = rng.standard_normal(surrogate.ndim)
        z *= radius / np.linalg.norm(z)
        theta = surrogate.mode + scipy.linalg.solve_triangular(chol, z, lower=True, trans=1)
        (value, gradient), (exact_value, exact_gradient) = surrogate.logp(theta), exact.logp(theta)
        assert value == pytest.approx(exact_value, rel=1e-12)
        assert np.linalg.norm(gradient - exact_gradient) < 0.02 * np.linalg.norm(exact_gradient)
    far = surrogate.mode + 100 * surrogate.sd  # outside the ellipsoid: exact gradient
    np.testing.assert_array_equal(surrogate.logp(far)[1], exact.logp(far)[1])


def test_nuts_with_the_trace_surrogate_samples_the_exact_posterior() -> None:
    """Hyperparameter posterior from nutpie (surrogate gradient) against importance sampling (exact values)."""
    import arviz as az
    import nutpie

    density = MarginalDensity(MarginalEvidence(surrogate_problem(), "global"), HierarchicalConfig())
    assert density.trace_surrogate
    idata = nutpie.sample(density.compile(), draws=500, tune=300, chains=2, seed=5, progress_bar=False)
    scales = [idata.posterior[name].values.reshape(1000, -1) for name in ("prior_scale", "mismatch_scale")]
    theta = np.log(np.concatenate(scales, axis=1))
    # reference: self-normalised importance sampling from the Laplace approximation, widened 1.5 x
    rng = np.random.default_rng(6)
    chol = np.linalg.cholesky(density.mode_precision / 1.5**2)
    z = rng.standard_normal((density.ndim, 4000))
    proposal = density.mode + scipy.linalg.solve_triangular(chol, z, lower=True, trans=1).T
    log_q = -0.5 * np.sum(((proposal - density.mode) @ chol) ** 2, axis=1)
    log_w = np.array([density.logp(t)[0] for t in proposal]) - log_q
    weights = np.exp(log_w - log_w.max())
    weights /= weights.sum()
    reference = weights @ proposal
    sd = np.sqrt(weights @ (proposal - reference) ** 2)
    ess = np.array([az.ess(theta[:, k].reshape(2, 500)) for k in range(density.ndim)])
    assert ess.min() > 300
    standard_error = sd * np.sqrt(1 / ess + weights @ weights)  # the chains' and the weights' Monte Carlo errors
    assert np.all(np.abs(theta.mean(0) - reference) < 4.5 * standard_error)
    np.testing.assert_allclose(theta.std(0), sd, rtol=0.15)


def test_fixed_hyperparameters_give_the_analytic_posterior_and_exact_draws() -> None:
    p = labelled(small_problem(seed=0, n_obs=60))
    exact = solve(p)
    post = solve(p, method="hierarchical", prior_scale_sigma=0.0, mismatch_scale_sigma=0.0, draws=400, chains=2)
    np.testing.assert_allclose(post.mean, exact.mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(post.covariance, exact.covariance, atol=1e-10 * np.abs(exact.covariance).max())
    flux = post.info["idata"].posterior["flux"]
    assert flux.dims == ("chain", "draw", "time", "region") and flux.sizes["chain"] == 2
    draws = flux.values.reshape(-1, p.n)
    z = (draws.mean(axis=0) - exact.mean) / (exact.sd / np.sqrt(draws.shape[0]))  # independent draws
    assert np.abs(z).max() < 4.5 and 0.8 < np.sqrt(np.mean(z**2)) < 1.25
    ratio = draws.var(axis=0, ddof=1) / exact.variance
    assert abs(ratio.mean() - 1) < 0.05


@pytest.mark.slow
def test_tight_hyperpriors_sampled_with_nutpie_agree_with_analytic() -> None:
    """Hyperpriors of width 1e-3 around 1: the sampled mixture is the analytic posterior within MC error."""
    p = labelled(small_problem(seed=0, n_obs=60))
    exact = solve(p)
    config = HierarchicalConfig(draws=150, tune=150, chains=2, prior_scale_sigma=1e-3, mismatch_scale_sigma=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 150 draws may fall short of the ESS goal
        post = solve(p, method="hierarchical", config=config)
    idata = post.info["idata"]
    assert idata.posterior.sizes["chain"] == 2 and {"prior_scale", "mismatch_scale"} <= set(idata.posterior)
    assert post.info["rhat_max"] < 1.1 and post.info["ess_bulk_min"] > 50
    # theta within ~1e-3 of 1 moves the posterior by ~1e-3 of its sd
    assert np.abs((post.mean - exact.mean) / exact.sd).max() < 0.02
    np.testing.assert_allclose(post.sd, exact.sd, rtol=0.02)


def test_config_errors_name_the_option() -> None:
    with pytest.raises(ValueError, match="scaling must be one of"):
        HierarchicalConfig(scaling="uniform")
    with pytest.raises(ValueError, match="prior_groups must be one of"):
        HierarchicalConfig(prior_groups="biome")
    with pytest.raises(TypeError, match="either config or keyword options"):
        solve(small_problem(), method="hierarchical", config=HierarchicalConfig(), draws=10)


@pytest.mark.slow
def test_mismatch_scale_is_recovered() -> None:
    """Noise twice the stated uncertainty at the 'tower' sites: the sampled factor finds about 2."""
    p = labelled(small_problem(seed=2, n_obs=600), seed=2)
    rng = np.random.default_rng(5)
    tower = p.obs["category"].values == "tower"
    extra = np.where(tower, np.sqrt(3 * p.R.diagonal()), 0.0) * rng.standard_normal(p.m)  # var 1 + 3 = 4
    post = solve(replace(p, y=p.y + extra), method="hierarchical", draws=500, tune=500)
    scale = post.info["idata"].posterior["mismatch_scale"].mean(("chain", "draw"))
    assert 1.7 < float(scale.sel(category="tower")) < 2.4
    assert 0.8 < float(scale.sel(category="mbl")) < 1.25


@pytest.mark.slow
@pytest.mark.parametrize("scaling", ["lognormal", "truncated_normal"])
def test_non_negative_scaling_is_close_to_gaussian_for_a_narrow_prior(scaling: str) -> None:
    """With prior sd 5 % of the prior flux, the scaling-factor posterior is nearly the Gaussian one."""
    p = small_problem(seed=0, n_obs=60)
    x_b = np.full(p.n, -1.0)
    B = DiagonalCovariance((0.05 * np.abs(x_b)) ** 2)
    p = replace(p, x_prior=x_b, B=B)
    exact = solve(p)
    post = solve(p, method="hierarchical", scaling=scaling, mismatch_scale_sigma=0.0, draws=500, tune=500)
    assert np.abs((post.mean - exact.mean) / exact.sd).max() < 0.3
    np.testing.assert_allclose(post.sd, exact.sd, rtol=0.2)


class _Interrupted(Exception):
    """Raised from the checkpoint callback to simulate a run killed after its first chain."""


@pytest.mark.filterwarnings("ignore:hierarchical. sampler not converged")  # 150 draws: R-hat checked below
def test_checkpoint_resumes_an_interrupted_run(tmp_path) -> None:
    import arviz as az

    p = labelled(small_problem(seed=0, years=1, n_obs=60))
    config = HierarchicalConfig(draws=150, tune=150, chains=2, prior_scale_sigma=0.01, mismatch_scale_sigma=0.01)
    path = tmp_path / "chains.nc"

    def interrupt(chain: int, where) -> None:
        assert where == path
        raise _Interrupted(chain)

    with pytest.raises(_Interrupted):
        solve(p, method="hierarchical", config=config, checkpoint=path, on_chain=interrupt)
    saved = az.from_netcdf(path)
    assert saved.posterior.sizes["chain"] == 1
    post = solve(p, method="hierarchical", config=config, checkpoint=path)
    assert post.info["chains_resumed"] == 1
    idata = post.info["idata"]
    assert idata.posterior.sizes == {"chain": 2, "draw": 150, "prior_group": 1, "category": 2, "time": 12, "region": 11}
    np.testing.assert_array_equal(idata.posterior["prior_scale"].isel(chain=0), saved.posterior["prior_scale"][0])
    assert az.from_netcdf(path).posterior.sizes["chain"] == 2
    assert post.info["rhat_max"] < 1.05
    # hyperpriors of width 1 %: the draws are the analytic posterior within Monte Carlo error (exact x | theta)
    exact = solve(p)
    draws = idata.posterior["flux"].values.reshape(-1, p.n)
    z = (draws.mean(axis=0) - exact.mean) / (exact.sd / np.sqrt(draws.shape[0]))
    assert np.abs(z).max() < 4.5 and np.sqrt(np.mean(z**2)) < 1.3
    np.testing.assert_allclose(post.sd, exact.sd, rtol=0.03)
    # a different problem or option is refused, naming the file
    with pytest.raises(ValueError, match=f"checkpoint {path} was written for a different problem"):
        solve(p, method="hierarchical", config=replace(config, draws=100), checkpoint=path)


def test_chains_in_processes_and_in_threads_give_the_same_draws(monkeypatch) -> None:
    """Each chain is seeded from (seed, chain): forked processes (Linux) and threads agree draw for draw."""
    import assim.solvers.hierarchical as hierarchical

    p = labelled(small_problem(seed=0, years=1, n_obs=60))
    config = HierarchicalConfig(draws=100, tune=100, chains=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 100 draws may fall short of the ESS goal
        forked = solve(p, method="hierarchical", config=config)
        monkeypatch.setattr(hierarchical.multiprocessing, "get_all_start_methods", lambda: ["spawn"])
        threaded = solve(p, method="hierarchical", config=config)
    for name in ("prior_scale", "mismatch_scale", "flux"):
        np.testing.assert_array_equal(forked.info["idata"].posterior[name], threaded.info["idata"].posterior[name])
    assert forked.info["idata"].posterior.sizes["chain"] == 2


def test_a_failing_chain_names_its_chain_and_the_cause() -> None:
    from nutpie.compiled_pyfunc import from_pyfunc

    from assim.solvers.hierarchical import _sample

    def broken(theta: np.ndarray):
        raise FloatingPointError("density exploded")

    compiled = from_pyfunc(
        ndim=1,
        make_logp_fn=lambda: broken,
        make_expand_fn=lambda *seeds: lambda theta: {"a": theta.copy()},
        expanded_dtypes=[np.dtype("float64")],
        expanded_shapes=[(1,)],
        expanded_names=["a"],
    )
    with pytest.raises(RuntimeError, match=r"(?s)sampling chain 0 failed.*density exploded"):
        _sample(lambda: compiled, HierarchicalConfig(draws=10, tune=10, chains=2))
