// The defaults the paper and SimPO set, named so that code, presets and tests share them.
export const DEFAULT_CHOSEN_TEMPLATE =
  'Please produce a top-notch response that merits a perfect score of {score} out of 10. {prompt}';
export const DEFAULT_REJECTED_TEMPLATE =
  'Please produce a good response that merits a perfect score of {score} out of 10. {prompt}';

// Responses that talk about the score they were asked for ("Okay, here is a 10-score answer").
export const DEFAULT_SCORE_TALK_PATTERNS = [
  '\\b(?:10|ten|[0-9]|one|two|three|four|five|six|seven|eight|nine)\\s*(?:/|out ' +
    'of)\\s*(?:10|ten)\\b',
  '\\b(?:10|ten|[0-9])[- ](?:score|point|star)\\b',
  '\\b(?:perfect|top[- ]notch|good)\\s+(?:score|response|answer)\\b',
  '\\bmerits?\\s+a\\s+(?:perfect\\s+)?score\\b',
  '\\bscore\\s+of\\s+\\d+\\b',
];

// simpo's default target margin: gamma = beta * 0.5 when neither gamma nor gammaBetaRatio is set.
export const DEFAULT_SIMPO_GAMMA_BETA_RATIO = 0.5;
export const DEFAULT_BETA = { simpo: 2.0, dpo: 0.1, ipo: 0.1, hinge: 0.1 } as const;
