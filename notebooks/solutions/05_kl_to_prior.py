# Exercise 05 ★★: the KL term of the ELBO, KL(q(z0 | x) || N(0, I)).
from neuralode_helpers.exercises import check_kl_to_prior


def kl_to_prior(mu, logvar):
    # For one coordinate, KL(N(m, v) || N(0, 1)) = E_q[log q - log p]
    #   = -1/2 log v - 1/2 + 1/2 (v + m^2)        (E_q[(x - m)^2] = v, E_q[x^2] = v + m^2)
    #   = 1/2 (m^2 + v - log v - 1),  with v = e^logvar.
    # The coordinates of q and of the prior are independent, so the KLs add over the latent
    # dimensions; one value per series, shape (B,).
    return 0.5 * (mu**2 + logvar.exp() - logvar - 1).sum(dim=-1)


check_kl_to_prior(kl_to_prior)
