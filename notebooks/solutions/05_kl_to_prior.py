# Exercise 5.2 ★★: the KL term of the ELBO, KL(q(z0 | x) || N(0, I)), and to a wider or narrower
# prior N(0, e^prior_logvar I) (prior_logvar = 0: the standard prior of section 3).
import torch

from neuralode_helpers.exercises import check_kl_to_prior


def kl_to_prior(mu, logvar, prior_logvar=0.0):
    # For one coordinate, with variances var = e^logvar and var_p = e^prior_logvar,
    # KL(N(m, var) || N(0, var_p)) = E_q[log q - log p]
    #   = -1/2 log var - 1/2 + 1/2 log var_p + (var + m^2) / (2 var_p)
    #                             (E_q[(x - m)^2] = var, E_q[x^2] = var + m^2)
    #   = 1/2 ((m^2 + var) / var_p - 1 - log var + log var_p);
    # for var_p = 1 this is 1/2 (m^2 + var - log var - 1). The coordinates of q and of the prior
    # are independent, so the KLs add over the latent dimensions; one value per series, (B,).
    prior_logvar = torch.as_tensor(prior_logvar, dtype=mu.dtype)
    ratio = (mu**2 + logvar.exp()) * torch.exp(-prior_logvar)
    return 0.5 * (ratio - 1 - logvar + prior_logvar).sum(dim=-1)


check_kl_to_prior(kl_to_prior)
