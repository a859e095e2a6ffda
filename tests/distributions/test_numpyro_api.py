"""NumPyro-compatible distribution API: ``is_discrete``, ``infer_shapes``,
constraint equality / pytrees / ``check``, ``Transform.sign`` and the
``validation_enabled`` context manager."""

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probnn.distributions as dist
from probnn.distributions import constraints, transforms
from probnn.distributions.distribution import _VALIDATION

# -- parameter shapes -> expected (batch_shape, event_shape) -----------------
# (class name, keyword parameter shapes, expected batch shape, expected event)
SHAPE_CASES = [
    ("Normal", {"loc": (3, 1), "scale": (4,)}, (3, 4), ()),
    ("Normal", {"loc": (), "scale": ()}, (), ()),
    ("Gamma", {"concentration": (2,), "rate": (5, 1)}, (5, 2), ()),
    ("Beta", {"concentration1": (2, 3), "concentration0": (3,)}, (2, 3), ()),
    ("StudentT", {"df": (2, 1, 1), "loc": (3, 1), "scale": (4,)}, (2, 3, 4), ()),
    ("Exponential", {"rate": (6,)}, (6,), ()),
    ("Uniform", {"low": (2, 1), "high": (3,)}, (2, 3), ()),
    ("VonMises", {"loc": (2,), "concentration": ()}, (2,), ()),
    ("Pareto", {"scale": (), "alpha": (4,)}, (4,), ()),
    ("Poisson", {"rate": (7, 2)}, (7, 2), ()),
    ("BernoulliProbs", {"probs": (3,)}, (3,), ()),
    ("BinomialProbs", {"probs": (3,), "total_count": (2, 1)}, (2, 3), ()),
    ("CategoricalProbs", {"probs": (2, 5)}, (2,), ()),
    ("CategoricalLogits", {"logits": (4, 3, 6)}, (4, 3), ()),
    ("MultinomialProbs", {"probs": (2, 4), "total_count": (3, 1)}, (3, 2), (4,)),
    ("MultinomialLogits", {"logits": (5,), "total_count": ()}, (), (5,)),
    ("OrderedLogistic", {"predictor": (3, 1), "cutpoints": (2, 4)}, (3, 2), ()),
    ("Dirichlet", {"concentration": (2, 3, 4)}, (2, 3), (4,)),
    ("DirichletMultinomial", {"concentration": (3,), "total_count": (2,)}, (2,), (3,)),
    ("GammaPoisson", {"concentration": (2,), "rate": (3, 1)}, (3, 2), ()),
    (
        "BetaBinomial",
        {"concentration1": (2,), "concentration0": (), "total_count": (4, 1)},
        (4, 2),
        (),
    ),
    ("NegativeBinomial2", {"mean": (3,), "concentration": (2, 1)}, (2, 3), ()),
    ("ZeroInflatedPoisson", {"gate": (3,), "rate": (2, 1)}, (2, 3), ()),
    ("MultivariateNormal", {"loc": (3,), "covariance_matrix": (2, 3, 3)}, (2,), (3,)),
    ("MultivariateNormal", {"loc": (4, 1, 2), "scale_tril": (5, 2, 2)}, (4, 5), (2,)),
    ("MultivariateNormal", {"loc": (), "precision_matrix": (3, 3)}, (), (3,)),
    (
        "LowRankMultivariateNormal",
        {"loc": (2, 3), "cov_factor": (3, 1), "cov_diag": (3,)},
        (2,),
        (3,),
    ),
    (
        "MultivariateStudentT",
        {"df": (2,), "loc": (3,), "scale_tril": (3, 3)},
        (2,),
        (3,),
    ),
]


def _case_id(case):
    name, shapes, _, _ = case
    return name + "-" + "-".join(f"{k}{v}" for k, v in shapes.items())


@pytest.mark.parametrize("case", SHAPE_CASES, ids=_case_id)
def test_infer_shapes_expected(case):
    name, shapes, batch_shape, event_shape = case
    assert getattr(dist, name).infer_shapes(**shapes) == (batch_shape, event_shape)


def _ones(shape):
    return jnp.ones(shape)


def _build(name, shapes):
    """An instance of ``name`` with parameters of the given shapes."""
    values = {}
    for key, shape in shapes.items():
        if key in ("covariance_matrix", "precision_matrix", "scale_tril"):
            values[key] = jnp.broadcast_to(jnp.eye(shape[-1]), shape)
        elif key in ("probs",):
            values[key] = jnp.full(shape, 1.0 / shape[-1])
        elif key == "cutpoints":
            values[key] = jnp.broadcast_to(jnp.arange(shape[-1], dtype=float), shape)
        elif key == "gate":
            values[key] = jnp.full(shape, 0.5)
        elif key == "total_count":
            values[key] = jnp.full(shape, 3, dtype=jnp.int32)
        elif key == "low":
            values[key] = jnp.zeros(shape)
        elif key == "high":
            values[key] = jnp.full(shape, 2.0)
        else:
            values[key] = _ones(shape)
    return getattr(dist, name)(**values)


@pytest.mark.parametrize("case", SHAPE_CASES, ids=_case_id)
def test_infer_shapes_matches_instances(case):
    name, shapes, _, _ = case
    d = _build(name, shapes)
    assert getattr(dist, name).infer_shapes(**shapes) == (d.batch_shape, d.event_shape)


@pytest.mark.parametrize("case", SHAPE_CASES, ids=_case_id)
def test_infer_shapes_matches_numpyro(case):
    numpyro_dist = pytest.importorskip("numpyro.distributions")
    name, shapes, _, _ = case
    reference = getattr(numpyro_dist, name)
    if not inspect.isclass(reference):
        pytest.skip(f"numpyro.distributions.{name} is not a class")
    assert getattr(dist, name).infer_shapes(**shapes) == reference.infer_shapes(
        **shapes
    )


def test_infer_shapes_positional_and_defaults():
    assert dist.Normal.infer_shapes((2,), (3, 1)) == ((3, 2), ())
    # Parameters left out count as scalars; None means "not given".
    assert dist.Gamma.infer_shapes((4,)) == ((4,), ())
    assert dist.MultivariateNormal.infer_shapes((2,), None, None, (5, 2, 2)) == (
        (5,),
        (2,),
    )
    assert dist.Categorical.infer_shapes(logits=(2, 3)) == ((2,), ())
    assert dist.Multinomial.infer_shapes((2,), probs=(3,)) == ((2,), (3,))
    assert dist.Delta.infer_shapes((2, 3), (), 1) == ((2,), (3,))
    assert dist.Delta.infer_shapes(v=(4,), log_density=(2, 1)) == ((2, 4), ())
    assert dist.Unit.infer_shapes((3,)) == ((3,), (0,))


@pytest.mark.parametrize(
    "name",
    [
        "ExpandedDistribution",
        "Independent",
        "MaskedDistribution",
        "TransformedDistribution",
        "MixtureSameFamily",
        "MixtureGeneral",
        "ZeroInflatedProbs",
        "ZeroInflatedLogits",
        "ImproperUniform",
        "GaussianRandomWalk",
        "LKJCholesky",
        "ZeroSumNormal",
    ],
)
def test_infer_shapes_not_available_names_the_class(name):
    with pytest.raises(NotImplementedError, match=name):
        getattr(dist, name).infer_shapes(())


def test_infer_shapes_bad_input_is_named():
    with pytest.raises(TypeError, match=r"Normal.*'scale'"):
        dist.Normal.infer_shapes((2,), 3)
    with pytest.raises(TypeError, match=r"Normal.*unexpected parameter 'mean'"):
        dist.Normal.infer_shapes(mean=(2,))
    with pytest.raises(TypeError, match="Normal.*at most 2"):
        dist.Normal.infer_shapes((), (), ())
    with pytest.raises(TypeError, match="multiple shapes for parameter 'loc'"):
        dist.Normal.infer_shapes((), loc=())
    with pytest.raises(ValueError, match="Normal.*do not broadcast"):
        dist.Normal.infer_shapes((2,), (3,))
    with pytest.raises(ValueError, match="Dirichlet.*'concentration'.*1 dims"):
        dist.Dirichlet.infer_shapes(())
    with pytest.raises(ValueError, match="exactly one of probs, logits"):
        dist.Categorical.infer_shapes(probs=(3,), logits=(3,))
    with pytest.raises(ValueError, match="MultivariateNormal.*exactly one"):
        dist.MultivariateNormal.infer_shapes((3,))


# -- is_discrete ---------------------------------------------------------------
def _eye3():
    return jnp.eye(3)


# name -> (args, kwargs) valid for both probnn and numpyro constructors
INSTANCES = {
    "Bernoulli": ((0.3,), {}),
    "BernoulliLogits": ((0.3,), {}),
    "BernoulliProbs": ((0.3,), {}),
    "Beta": ((2.0, 3.0), {}),
    "BetaBinomial": ((2.0, 3.0, 5), {}),
    "Binomial": ((5, 0.3), {}),
    "BinomialLogits": ((0.3, 5), {}),
    "BinomialProbs": ((0.3, 5), {}),
    "Categorical": ((jnp.array([0.2, 0.8]),), {}),
    "CategoricalLogits": ((jnp.array([0.2, 0.8]),), {}),
    "CategoricalProbs": ((jnp.array([0.2, 0.8]),), {}),
    "Cauchy": ((0.0, 1.0), {}),
    "Chi2": ((3.0,), {}),
    "Delta": ((1.0,), {}),
    "Dirichlet": ((jnp.ones(3),), {}),
    "DirichletMultinomial": ((jnp.ones(3), 4), {}),
    "DiscreteUniform": ((0, 4), {}),
    "Exponential": ((2.0,), {}),
    "Gamma": ((2.0, 1.0), {}),
    "GammaPoisson": ((2.0, 1.0), {}),
    "GaussianRandomWalk": ((1.0, 4), {}),
    "Geometric": ((0.3,), {}),
    "GeometricLogits": ((0.3,), {}),
    "GeometricProbs": ((0.3,), {}),
    "Gumbel": ((0.0, 1.0), {}),
    "HalfCauchy": ((1.0,), {}),
    "HalfNormal": ((1.0,), {}),
    "InverseGamma": ((2.0, 1.0), {}),
    "LKJCholesky": ((3, 1.0), {}),
    "Laplace": ((0.0, 1.0), {}),
    "LogNormal": ((0.0, 1.0), {}),
    "Logistic": ((0.0, 1.0), {}),
    "LowRankMultivariateNormal": ((jnp.zeros(3), jnp.ones((3, 1)), jnp.ones(3)), {}),
    "Multinomial": ((4, jnp.array([0.5, 0.5])), {}),
    "MultinomialLogits": ((jnp.array([0.5, 0.5]), 4), {}),
    "MultinomialProbs": ((jnp.array([0.5, 0.5]), 4), {}),
    "MultivariateNormal": ((jnp.zeros(3), _eye3()), {}),
    "MultivariateStudentT": ((3.0, jnp.zeros(3), _eye3()), {}),
    "NegativeBinomial": ((3.0,), {"probs": 0.2}),
    "NegativeBinomial2": ((2.0, 3.0), {}),
    "NegativeBinomialLogits": ((3.0, 0.2), {}),
    "NegativeBinomialProbs": ((3.0, 0.2), {}),
    "Normal": ((0.0, 1.0), {}),
    "OrderedLogistic": ((0.0, jnp.array([-1.0, 1.0])), {}),
    "Pareto": ((1.0, 2.0), {}),
    "Poisson": ((2.0,), {}),
    "RelaxedBernoulli": ((0.5, 0.3), {}),
    "RelaxedBernoulliLogits": ((0.5, 0.3), {}),
    "StudentT": ((3.0, 0.0, 1.0), {}),
    "TruncatedNormal": ((0.0, 1.0), {"low": 0.0}),
    "Uniform": ((0.0, 2.0), {}),
    "Unit": ((jnp.zeros(()),), {}),
    "VonMises": ((0.0, 1.0), {}),
    "Weibull": ((1.0, 2.0), {}),
    "ZeroInflatedPoisson": ((0.3, 2.0), {}),
    "ZeroSumNormal": ((1.0, (3,)), {}),
}


def _instance(module, name):
    args, kwargs = INSTANCES[name]
    return getattr(module, name)(*args, **kwargs)


def _wrapped(module):
    """Wrapper distributions over a discrete and a continuous base."""
    out = []
    for base in (module.Poisson(jnp.ones(2)), module.Normal(jnp.zeros(2), 1.0)):
        out.append(("Independent", base.to_event(1)))
        out.append(("ExpandedDistribution", base.expand((3, 2))))
        out.append(("MaskedDistribution", base.mask(jnp.array([True, False]))))
        out.append(
            (
                "MixtureSameFamily",
                module.MixtureSameFamily(module.Categorical(jnp.ones(2) / 2), base),
            )
        )
        out.append(
            (
                "MixtureGeneral",
                module.MixtureGeneral(
                    module.Categorical(jnp.ones(2) / 2),
                    [
                        type(base)(jnp.ones(()) * 2.0)
                        if isinstance(base, module.Poisson)
                        else type(base)(0.0, 1.0),
                        type(base)(jnp.ones(()) * 3.0)
                        if isinstance(base, module.Poisson)
                        else type(base)(1.0, 2.0),
                    ],
                ),
            )
        )
        if isinstance(base, module.Poisson):  # zero inflation needs a pmf
            gate = jnp.full(2, 0.5)
            out.append(("ZeroInflatedProbs", module.ZeroInflatedProbs(base, gate)))
            out.append(("ZeroInflatedLogits", module.ZeroInflatedLogits(base, 0.0)))
    out.append(
        (
            "TransformedDistribution",
            module.TransformedDistribution(
                module.Normal(0.0, 1.0), module.transforms.ExpTransform()
            ),
        )
    )
    return out


def test_every_exported_distribution_has_a_case():
    covered = set(INSTANCES) | {name for name, _ in _wrapped(dist)}
    covered |= {"Distribution", "ImproperUniform"}
    exported = {
        name
        for name in dist.__all__
        if inspect.isclass(getattr(dist, name))
        and issubclass(getattr(dist, name), dist.Distribution)
    }
    assert exported <= covered, exported - covered


@pytest.mark.parametrize("name", sorted(INSTANCES))
def test_is_discrete_follows_support(name):
    d = _instance(dist, name)
    assert isinstance(d.is_discrete, bool)
    assert d.is_discrete == d.support.is_discrete


@pytest.mark.parametrize("name", sorted(INSTANCES))
def test_is_discrete_matches_numpyro(name):
    numpyro_dist = pytest.importorskip("numpyro.distributions")
    if not hasattr(numpyro_dist, name):
        pytest.skip(f"numpyro has no {name}")
    assert (
        _instance(dist, name).is_discrete == _instance(numpyro_dist, name).is_discrete
    )


def test_is_discrete_of_wrappers_matches_numpyro():
    numpyro_dist = pytest.importorskip("numpyro.distributions")
    ours = _wrapped(dist)
    theirs = _wrapped(numpyro_dist)
    for (name, mine), (_, reference) in zip(ours, theirs, strict=True):
        assert mine.is_discrete == reference.is_discrete, name
    flags = {(name, d.is_discrete) for name, d in ours}
    assert ("Independent", True) in flags and ("Independent", False) in flags


def test_is_discrete_improper_uniform():
    assert not dist.ImproperUniform(constraints.positive, (2,), ()).is_discrete
    assert dist.ImproperUniform(constraints.nonnegative_integer, (), ()).is_discrete


# -- constraints ---------------------------------------------------------------
def test_check_is_call():
    x = jnp.array([-1.0, 0.5, 2.0])
    for c in (constraints.positive, constraints.unit_interval, constraints.real):
        np.testing.assert_array_equal(c.check(x), c(x))
    assert bool(constraints.simplex.check(jnp.array([0.25, 0.75])))
    assert constraints.real_vector.check(jnp.ones((2, 3))).shape == (2,)


def test_event_dim_and_is_discrete_attributes():
    assert constraints.real.event_dim == 0
    assert constraints.real_vector.event_dim == 1
    assert constraints.independent(constraints.real_vector, 1).event_dim == 2
    assert constraints.lower_cholesky.event_dim == 2
    assert constraints.nonnegative_integer.is_discrete
    assert constraints.integer_interval(0, 3).is_discrete
    assert constraints.independent(constraints.boolean, 1).is_discrete
    assert not constraints.interval(0.0, 1.0).is_discrete


def test_constraint_attributes_match_numpyro():
    numpyro_constraints = pytest.importorskip("numpyro.distributions.constraints")
    names = [
        "boolean",
        "circular",
        "corr_cholesky",
        "corr_matrix",
        "lower_cholesky",
        "nonnegative",
        "nonnegative_integer",
        "ordered_vector",
        "positive",
        "positive_definite",
        "positive_integer",
        "positive_semidefinite",
        "real",
        "real_matrix",
        "real_vector",
        "simplex",
        "softplus_lower_cholesky",
        "softplus_positive",
        "sphere",
        "unit_interval",
    ]
    for name in names:
        mine, theirs = getattr(constraints, name), getattr(numpyro_constraints, name)
        assert mine.event_dim == theirs.event_dim, name
        assert mine.is_discrete == theirs.is_discrete, name
        assert len(jax.tree.leaves(mine)) == len(jax.tree.leaves(theirs)), name


def test_equality_compares_kind_and_parameters():
    assert constraints.interval(0.0, 1.0) == constraints.interval(0.0, 1.0)
    assert constraints.interval(0.0, 1.0) != constraints.interval(0.0, 2.0)
    assert constraints.interval(0, 1) == constraints.interval(0.0, 1.0)
    assert constraints.interval(0.0, 1.0) == constraints.unit_interval
    assert constraints.unit_interval == constraints.interval(0.0, 1.0)
    assert constraints.positive == constraints.greater_than(0.0)
    assert constraints.greater_than(0.0) != constraints.greater_than_eq(0.0)
    assert constraints.interval(0.0, 1.0) != constraints.open_interval(0.0, 1.0)
    assert constraints.interval(0, 3) != constraints.integer_interval(0, 3)
    assert constraints.nonnegative_integer == constraints.integer_greater_than(0)
    assert constraints.positive_integer != constraints.nonnegative_integer
    assert constraints.real_vector == constraints.independent(constraints.real, 1)
    assert constraints.real_matrix == constraints.independent(
        constraints.real_vector, 1
    )
    assert constraints.real_vector != constraints.real
    assert constraints.positive != constraints.real
    assert constraints.positive != "positive"
    lows = jnp.array([0.0, 1.0])
    assert constraints.greater_than(lows) == constraints.greater_than(lows + 0.0)
    assert constraints.greater_than(lows) != constraints.greater_than(lows + 1.0)


def test_equality_matches_numpyro_on_shared_cases():
    nc = pytest.importorskip("numpyro.distributions.constraints")
    cases = [
        (lambda c: c.interval(0.0, 1.0), lambda c: c.interval(0.0, 1.0)),
        (lambda c: c.interval(0.0, 1.0), lambda c: c.interval(0.0, 2.0)),
        (lambda c: c.positive, lambda c: c.greater_than(0.0)),
        (lambda c: c.unit_interval, lambda c: c.interval(0.0, 1.0)),
        (lambda c: c.real_vector, lambda c: c.independent(c.real, 1)),
        (lambda c: c.real, lambda c: c.positive),
        (lambda c: c.integer_interval(0, 2), lambda c: c.integer_interval(0, 2)),
        (lambda c: c.integer_interval(0, 2), lambda c: c.integer_interval(0, 3)),
        (lambda c: c.nonnegative_integer, lambda c: c.integer_greater_than(0)),
        (lambda c: c.less_than(1.0), lambda c: c.less_than(1.0)),
        (lambda c: c.multinomial(3), lambda c: c.multinomial(4)),
    ]
    for left, right in cases:
        assert (left(constraints) == right(constraints)) == (left(nc) == right(nc))


def test_hash_agrees_with_equality():
    pairs = [
        (constraints.positive, constraints.greater_than(0.0)),
        (constraints.interval(0.0, 1.0), constraints.unit_interval),
        (constraints.interval(0, 1), constraints.interval(0.0, 1.0)),
        (constraints.real_vector, constraints.independent(constraints.real, 1)),
        (constraints.greater_than(jnp.zeros(3)), constraints.greater_than(0.0)),
        (
            constraints.interval(np.arange(3.0), 5.0),
            constraints.interval(np.arange(3.0), 5.0),
        ),
    ]
    for a, b in pairs:
        assert a == b and hash(a) == hash(b)
    table = {constraints.positive: "exp", constraints.interval(0.0, 1.0): "sigmoid"}
    assert table[constraints.greater_than(0.0)] == "exp"
    assert table[constraints.unit_interval] == "sigmoid"


def test_pytree_leaves():
    assert jax.tree.leaves(constraints.positive) == []
    assert jax.tree.leaves(constraints.real_vector) == []
    assert jax.tree.leaves(constraints.nonnegative_integer) == []
    assert jax.tree.leaves(constraints.interval(0.0, 1.0)) == [0.0, 1.0]
    assert jax.tree.leaves(constraints.greater_than(2.0)) == [2.0]
    assert jax.tree.leaves(constraints.less_than(3.0)) == [3.0]
    assert jax.tree.leaves(constraints.integer_interval(0, 4)) == [0, 4]
    nested = constraints.independent(constraints.interval(0.0, 1.0), 1)
    assert jax.tree.leaves(nested) == [0.0, 1.0]


def test_singletons_survive_jit():
    for c in (constraints.positive, constraints.real, constraints.simplex):
        assert jax.jit(lambda c: c)(c) is c
    vector = jax.jit(lambda c: c)(constraints.real_vector)
    assert vector == constraints.real_vector and vector.base is constraints.real
    assert dist.transforms.biject_to(jax.jit(lambda c: c)(constraints.positive))


def test_parametrised_constraints_through_jit_and_vmap():
    lower = jax.jit(lambda c: c.lower_bound)(constraints.interval(0.0, 1.0))
    assert float(lower) == 0.0
    checks = jax.vmap(lambda lo: constraints.greater_than(lo).check(2.0))(
        jnp.arange(3.0)
    )
    np.testing.assert_array_equal(checks, [True, True, False])
    inside = jax.jit(lambda c, x: c(x))(
        constraints.integer_interval(0, 3), jnp.array([0.0, 2.0, 3.5])
    )
    np.testing.assert_array_equal(inside, [True, True, False])
    out = jax.jit(lambda c: c)(constraints.less_than(1.5))
    assert out == constraints.less_than(1.5)


def test_dependent_constraint_flags():
    assert constraints.is_dependent(constraints.dependent)
    flatten = jax.tree_util.tree_flatten(constraints.dependent)
    rebuilt = jax.tree_util.tree_unflatten(flatten[1], flatten[0])
    assert constraints.is_dependent(rebuilt)
    assert rebuilt.event_dim == constraints.dependent.event_dim


# -- Transform.sign ---------------------------------------------------------------
def test_transform_sign():
    t = transforms
    assert t.ExpTransform().sign == 1
    assert t.IdentityTransform().sign == 1
    assert t.SigmoidTransform().sign == 1
    assert t.SoftplusTransform().sign == 1
    assert int(t.AffineTransform(1.0, -2.0).sign) == -1
    assert int(t.PowerTransform(-1.0).sign) == -1
    assert t.ExpTransform().inv.sign == 1
    composed = t.ComposeTransform([t.ExpTransform(), t.AffineTransform(0.0, -3.0)])
    assert int(composed.sign) == -1
    assert int(t.biject_to(constraints.less_than(2.0)).sign) == -1
    assert int(t.biject_to(constraints.interval(0.0, 4.0)).sign) == 1
    with pytest.raises(NotImplementedError, match="StickBreakingTransform"):
        _ = t.StickBreakingTransform().sign


def test_transform_sign_matches_numpyro():
    nt = pytest.importorskip("numpyro.distributions.transforms")
    pairs = [
        (transforms.ExpTransform(), nt.ExpTransform()),
        (transforms.SigmoidTransform(), nt.SigmoidTransform()),
        (transforms.AffineTransform(0.0, -2.0), nt.AffineTransform(0.0, -2.0)),
        (transforms.PowerTransform(2.0), nt.PowerTransform(2.0)),
    ]
    for mine, theirs in pairs:
        assert int(mine.sign) == int(theirs.sign)


# -- validation_enabled ---------------------------------------------------------------
def test_validation_enabled_toggles_and_restores():
    before = _VALIDATION["enabled"]
    try:
        dist.enable_validation(False)
        dist.Normal(0.0, -1.0)  # not checked
        with dist.validation_enabled():
            assert _VALIDATION["enabled"]
            with pytest.raises(ValueError, match="Normal.*'scale'"):
                dist.Normal(0.0, -1.0)
            with dist.validation_enabled(False):
                dist.Normal(0.0, -1.0)
            assert _VALIDATION["enabled"]
        assert not _VALIDATION["enabled"]
        dist.enable_validation(True)
        with pytest.raises(RuntimeError), dist.validation_enabled(False):
            assert not _VALIDATION["enabled"]
            raise RuntimeError("inside")
        assert _VALIDATION["enabled"]
    finally:
        dist.enable_validation(before)


def test_validation_enabled_is_exported_like_numpyro():
    assert "validation_enabled" in dist.__all__
    numpyro_module = pytest.importorskip("numpyro.distributions.distribution")
    assert hasattr(numpyro_module, "validation_enabled")
    from probnn.distributions import distribution

    assert distribution.validation_enabled is dist.validation_enabled


def test_pi_bounds_of_circular():
    assert constraints.circular == constraints.interval(-math.pi, math.pi)
