// 帮我选's estimate: from the work (fine-tune a model, serve tokens) to card-hours per card class.
// Pure functions of the task, the stated assumptions (each editable on the page) and the
// performance table (GET /v1/performance); docs/ESTIMATES.md cites where each default comes from.
"use strict";

const CxEstimate = (() => {
  const ASSUMPTIONS = {
    trainingBytesPerParam: 16,   // mixed-precision Adam: 2 weights + 2 gradients + 4 master + 4 + 4 moments
    inferenceBytesPerParam: 2,   // FP16/BF16 weights
    trainingFlopsPerParamToken: 6, // forward 2·N + backward 4·N per token
    inferenceFlopsPerParamToken: 2, // forward only
    memoryOverhead: 1.2,         // activations, KV cache and the framework, on top of the above
    usableMemory: 0.9,           // share of a card's memory a job can use
    trainingUtilisation: 0.4,    // model FLOPs utilisation of the peak dense throughput
    inferenceUtilisation: 0.2,
  };

  const GB = 1e9;

  /** Card memory in GB, read from the performance table's card name ("NVIDIA A100 80 GB"). */
  function cardMemoryGB(card) {
    const match = /(\d+)\s*GB/.exec(card.name);
    return match ? Number(match[1]) : null;
  }

  /** The work's floating-point operations and the memory one copy of the model needs. */
  function work(task, a) {
    const params = task.paramsBillions * 1e9;
    if (task.kind === "finetune") {
      const tokens = task.tokensBillions * 1e9;
      return {
        flops: a.trainingFlopsPerParamToken * params * tokens,
        memoryGB: (a.trainingBytesPerParam * params * a.memoryOverhead) / GB,
        utilisation: a.trainingUtilisation,
      };
    }
    if (task.kind === "serve") {
      const tokens = task.tokensMillionsPerDay * 1e6 * task.days;
      return {
        flops: a.inferenceFlopsPerParamToken * params * tokens,
        memoryGB: (a.inferenceBytesPerParam * params * a.memoryOverhead) / GB,
        utilisation: a.inferenceUtilisation,
      };
    }
    throw new Error("unknown task " + task.kind);
  }

  /** Hours of a card of `tflops` peak dense throughput that `flops` take at `utilisation`. */
  function cardHours(flops, tflops, utilisation) {
    return flops / (tflops * 1e12 * utilisation * 3600);
  }

  /**
   * Per card class: the cards one copy of the model needs for memory, the card-hours of the
   * work, and the cards per hour the planner would give a need of `standardHours` over
   * `hours` hours (ceil(standard card-hours / (factor x hours))); a class fits when those
   * cards hold the model.
   */
  function estimate(task, a, performance, hours) {
    const w = work(task, a);
    const base = performance.cards.find((c) => c.code === performance.base);
    const standardHours = Math.ceil(cardHours(w.flops, Number(base.dense_tflops), w.utilisation));
    const classes = performance.cards.map((card) => {
      const memory = cardMemoryGB(card);
      const factor = Number(card.factor);
      const forMemory = memory ? Math.ceil(w.memoryGB / (memory * a.usableMemory)) : null;
      const perHour = Math.ceil(standardHours / (factor * hours));
      return {
        code: card.code,
        memoryGB: memory,
        cardsForMemory: forMemory,
        cardHours: cardHours(w.flops, Number(card.dense_tflops), w.utilisation),
        cardsPerHour: perHour,
        fits: forMemory !== null && perHour >= forMemory,
      };
    });
    return { flops: w.flops, memoryGB: w.memoryGB, standardHours, classes };
  }

  return { ASSUMPTIONS, cardMemoryGB, work, cardHours, estimate };
})();

if (typeof module !== "undefined") module.exports = CxEstimate;
