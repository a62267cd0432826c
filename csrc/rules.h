/* The optimizer rules: one row each, the one list every layer follows.
 *
 *   X(ID, name, states, hyperparameters, flags, scalars)
 *
 * states           the state streams, in slot order; "name:flag" is present only
 *                  when that flag is set
 * hyperparameters  fo_step.h[0], h[1], ... in order, each with the check the
 *                  fast path applies before a call (beta: [0, 1); fraction:
 *                  [0, 1]; eps: >= 0; nonneg: finite and >= 0)
 * flags            the rule's options, bit 0 first: FO_<ID>_<FLAG> below
 * scalars          scalar state (double, with its check), read and written by each call:
 *                  fo_step.scalars[0], ...
 * decay            the weight-decay styles the rule takes (FO_DECAY_* bits)
 *
 * A state slot is an array of the parameter's shape; a rule that keeps more
 * (Adafactor's factored second moment) receives it per array (fo_factors).
 * A rule in FO_REDUCE_RULES has a per-array reduction: see there.
 *
 * The Python declarations (fastoptim.optimizers) and the NumPy twins
 * (fastoptim._fallback) use the same names in the same order; a test checks
 * them against this list. Each rule's kernel is a section of kernels.inc. */
#ifndef FASTOPTIM_RULES_H
#define FASTOPTIM_RULES_H

#define FO_RULES(X)                                                                       \
    X(SGD, sgd, "momentum_buffer:momentum", "momentum:beta dampening:fraction",           \
      "momentum nesterov average", "", FO_DECAY_L2)                                      \
    X(ADAM, adam, "v s max_s:amsgrad", "beta1:beta beta2:beta epsilon:eps", "amsgrad", "", \
      FO_DECAY_L2 | FO_DECAY_DECOUPLED)                                                   \
    X(NADAM, nadam, "v s", "beta1:beta beta2:beta epsilon:eps momentum_decay:nonneg", "",  \
      "mu_product:fraction", FO_DECAY_L2 | FO_DECAY_DECOUPLED)                            \
    X(RADAM, radam, "v s", "beta1:beta beta2:beta epsilon:eps", "", "",                    \
      FO_DECAY_L2 | FO_DECAY_DECOUPLED)                                                   \
    X(ADAMAX, adamax, "v exp_inf", "beta1:beta beta2:beta epsilon:eps", "", "", FO_DECAY_L2) \
    X(ADAGRAD, adagrad, "sum", "lr_decay:nonneg epsilon:eps", "", "", FO_DECAY_L2)         \
    X(RMSPROP, rmsprop, "square_avg grad_avg:centered momentum_buffer:momentum",           \
      "alpha:beta epsilon:eps momentum:beta", "centered momentum", "", FO_DECAY_L2)       \
    X(LION, lion, "v", "beta1:beta beta2:beta", "", "", FO_DECAY_DECOUPLED)                 \
    X(SCHEDULE_FREE_ADAMW, schedule_free_adamw, "z s",                                    \
      "beta1:beta beta2:beta epsilon:eps warmup_steps:nonneg r:nonneg weight_lr_power:nonneg", \
      "", "weight_sum:nonneg lr_max:nonneg", FO_DECAY_UPDATE)                             \
    X(SCHEDULE_FREE_SGD, schedule_free_sgd, "z",                                          \
      "momentum:beta warmup_steps:nonneg r:nonneg weight_lr_power:nonneg", "",            \
      "weight_sum:nonneg lr_max:nonneg", FO_DECAY_L2)                                     \
    X(LAMB, lamb, "v s", "beta1:beta beta2:beta epsilon:eps", "", "", FO_DECAY_UPDATE)     \
    X(ADAFACTOR, adafactor, "variance", "decay_rate:nonneg epsilon1:eps epsilon2:eps d:nonneg", \
      "machine_epsilon", "", FO_DECAY_DECOUPLED)

#define FO_RULE_ID(ID, ...) FO_RULE_##ID,
enum fo_rule { FO_RULES(FO_RULE_ID) FO_NUM_RULES };
#undef FO_RULE_ID

/* Weight decay, per array (applied only where the array's decay is non-zero):
 * L2 adds wd*p to the gradient (torch's Adam, SGD, ...); decoupled scales p by
 * 1 - lr*wd before the update (AdamW, Lion; Loshchilov & Hutter 2019); update
 * adds wd*p to the rule's update direction, where the rule says (Schedule-Free
 * AdamW's normalized gradient, LAMB's update before the trust ratio). */
enum { FO_DECAY_L2 = 1u << 8, FO_DECAY_DECOUPLED = 1u << 9, FO_DECAY_UPDATE = 1u << 11 };
/* Set by the driver: the gradient's scale is applied in two factors (kernels.inc). */
enum { FO_SCALE_SPLIT = 1u << 10 };

/* Rules with a per-array reduction (LAMB's trust ratio, Adafactor's update
 * clipping) run in two passes. Reduce (the kernel called with FO_REDUCE):
 * update the state and write, per element, up to FO_MAX_SUMS quantities whose
 * sums of squares the driver accumulates per array (in double, in fixed blocks:
 * the same for any thread count); the rule's `finish` turns an array's sums
 * into its factor (in double). Apply (without FO_REDUCE): update p with it. */
#define FO_REDUCE_RULES(X) X(LAMB, lamb) X(ADAFACTOR, adafactor)
enum { FO_REDUCE = 1u << 12 };
#define FO_MAX_SUMS 2

/* The rules' options. Flags a call does not pass itself are set by the rule's
 * per-call preparation (marked "derived"). */
enum {
    FO_SGD_MOMENTUM = 1u << 0,   /* keep a momentum buffer */
    FO_SGD_NESTEROV = 1u << 1,   /* step along g + momentum*b */
    FO_SGD_AVERAGE = 1u << 2,    /* the buffer is the course's exponential average:
                                    no first-step copy, Nesterov by (1-dampening)*g */
    FO_SGD_FIRST = 1u << 3,      /* derived: torch's first step, b = g */
    FO_ADAM_AMSGRAD = 1u << 0,   /* use the running maximum of v (Reddi et al. 2018) */
    FO_RADAM_RECTIFIED = 1u << 0, /* derived: rho_t > 5, the adaptive step */
    FO_RMSPROP_CENTERED = 1u << 0, /* subtract the squared mean gradient */
    FO_RMSPROP_MOMENTUM = 1u << 1, /* keep a momentum buffer */
    FO_SCHEDULE_FREE_FIRST = 1u << 0, /* derived: t = 1, z starts at y (the reference's
                                         clone at its first step) */
    FO_ADAFACTOR_MACHINE_EPSILON = 1u << 0, /* epsilon1 is the element type's machine
                                               epsilon (torch's eps=(None, ...)) */
    FO_ADAFACTOR_LERP_END = 1u << 1 /* derived: the weight is >= 0.5 (torch's lerp form) */
};

#define FO_MAX_STATES 3
#define FO_MAX_HYPER 8
#define FO_MAX_SCALARS 4

#endif
