// Which of a buyer's deliveries the page offers a dispute for: those the API accepts one for.
// An hour's obligation is disputed once metered; a token bundle's is drawn down as metered, so
// it is disputed while owed or drawing (none after a dispute, nor once settled).
"use strict";

const CxDeliveries = (() => {
  // A token bundle: a token class for a day, week or month, drawn down as metered.
  const isBundle = (symbol) => /^TOK-[A-Z0-9-]+\.[A-Z]+\.[DWM]\d+$/.test(symbol);
  const DISPUTABLE_BUNDLE = new Set(["owed", "drawing"]);
  const disputable = (delivery) =>
    isBundle(delivery.symbol) ? DISPUTABLE_BUNDLE.has(delivery.status) : delivery.status === "metered";
  return { isBundle, disputable };
})();

if (typeof module !== "undefined") module.exports = CxDeliveries;
