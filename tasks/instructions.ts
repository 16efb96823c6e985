// Instruction prompts the project writes itself for runs on real instruct models (writing, advice,
// coding, maths, facts): each category is a few templates crossed with a few subjects, in a fixed
// order. Every prompt belongs to exactly one split by a hash of its text (1 in 8 held out), so
// the held-out prompts never overlap training, whatever the counts.
import { createHash } from 'node:crypto';

type InstructionCategory = 'writing' | 'advice' | 'coding' | 'maths' | 'facts';

interface Instruction {
  category: InstructionCategory;
  prompt: string;
}

const cross = (templates: string[], subjects: string[]) =>
  templates.flatMap((t) => subjects.map((s) => t.replace('{}', s)));

const WRITING = cross(
  [
    'Write a short poem about {}.',
    'Write a haiku about {}.',
    'Write a two-sentence story about {}.',
    'Describe {} in three vivid sentences.',
    'Write a short, friendly social media post about {}.',
    'Write a limerick about {}.',
  ],
  [
    'the sea at night',
    'a rainy Monday morning',
    'an old lighthouse',
    'autumn leaves',
    'a lost cat',
    'the first day of school',
    'a busy train station',
    'a mountain sunrise',
    'a quiet library',
    'a garden in spring',
    'a city after snowfall',
    'a birthday party',
  ],
);

const ADVICE = cross(
  [
    'Give me three practical tips for {}.',
    'How can I get better at {}?',
    'What are common mistakes people make when {}?',
    'Explain briefly how to start {}.',
    'Why does {} matter, and where should a beginner focus?',
  ],
  [
    'sleeping well',
    'saving money each month',
    'learning a new language',
    'running a first 5k',
    'preparing for a job interview',
    'keeping houseplants alive',
    'cooking healthy meals on a budget',
    'public speaking',
    'staying focused while working from home',
    'writing a clear email',
    'making friends in a new city',
    'studying for an exam',
  ],
);

const CODING = [
  ...cross(
    [
      'Write a Python function that {}.',
      'Write a JavaScript function that {}.',
      'Write a Rust function that {}.',
    ],
    [
      'reverses a string',
      'checks whether a number is prime',
      'returns the largest item in a list',
      'counts the vowels in a word',
      'computes the factorial of n',
      'removes duplicates from a list',
      'checks whether a word is a palindrome',
      'converts Celsius to Fahrenheit',
      'sums the even numbers in a list',
      'returns the n-th Fibonacci number',
    ],
  ),
  ...cross(
    ['Explain what {} is in programming, with a small example.'],
    [
      'a variable',
      'a loop',
      'recursion',
      'a hash map',
      'an exception',
      'a class',
      'a unit test',
      'a pure function',
      'an API',
      'version control',
    ],
  ),
];

const REWRITING = [
  ...cross(
    ['Rewrite this sentence to sound more formal: "{}"'],
    [
      'hey, can u send me the report asap?',
      'the meeting got moved, sorry about that',
      'we messed up the order, gonna fix it',
      'thanks a ton for helping out yesterday',
      'i cant make it to the party tonight',
      'the printer is broken again, ugh',
    ],
  ),
  ...cross(
    ['Write a short product description for {}.'],
    [
      'a reusable water bottle',
      'a pair of noise-cancelling headphones',
      'a wooden chess set',
      'a solar-powered phone charger',
      'a cozy wool blanket',
      'a beginner guitar',
    ],
  ),
];

// Arithmetic and short word problems with fixed numbers, so every answer is checkable by hand.
const MATHS = [
  ...[
    [17, 25],
    [48, 36],
    [125, 75],
    [304, 219],
    [999, 1],
  ].map(([a, b]) => `What is ${a} plus ${b}?`),
  ...[
    [12, 7],
    [15, 15],
    [23, 4],
    [9, 11],
    [30, 12],
  ].map(([a, b]) => `What is ${a} times ${b}?`),
  ...[
    [100, 37],
    [81, 19],
    [1000, 250],
    [64, 28],
  ].map(([a, b]) => `What is ${a} minus ${b}?`),
  ...[
    [144, 12],
    [90, 6],
    [625, 25],
    [84, 7],
  ].map(([a, b]) => `What is ${a} divided by ${b}?`),
  ...[
    [3, 40],
    [5, 12],
    [8, 25],
    [6, 75],
  ].map(
    ([n, p]) => `Apples cost ${p} cents each. How much do ${n} apples cost? Explain your steps.`,
  ),
  ...[
    [60, 2],
    [90, 3],
    [45, 0.5],
    [120, 4],
  ].map(([v, h]) => `A car travels at ${v} km per hour for ${h} hours. How far does it go?`),
  ...[10, 25, 50, 75].map((p) => `What is ${p}% of 80?`),
  ...[4, 7, 9, 12].map((s) => `What is the area of a square with sides of ${s} cm?`),
  ...[2, 3, 5, 10].map(
    (r) => `What is the circumference of a circle with radius ${r} m? Use pi = 3.14.`,
  ),
  ...[
    [2, 10],
    [3, 4],
    [5, 3],
    [10, 6],
  ].map(([b, e]) => `What is ${b} to the power of ${e}?`),
  'Is 91 a prime number? Explain why or why not.',
  'What is the next number in the sequence 2, 4, 8, 16?',
  'What is the next number in the sequence 1, 4, 9, 16, 25?',
  'If a pizza is cut into 8 slices and I eat 3, what fraction is left?',
  'Solve for x: 3x + 5 = 20.',
  'Solve for x: 2x - 7 = 9.',
  'What is the average of 4, 8, 15, 16, 23 and 42?',
  'How many minutes are there in a week?',
  'Convert 3.5 hours into minutes.',
  'A shirt costs 40 dollars and is 25% off. What is the new price?',
];

const FACTS = [
  ...cross(
    ['What is the capital of {}?'],
    [
      'France',
      'Japan',
      'Canada',
      'Australia',
      'Brazil',
      'Egypt',
      'Kenya',
      'Norway',
      'India',
      'Mexico',
      'Italy',
      'Argentina',
    ],
  ),
  ...cross(
    ['Explain in simple terms {}.'],
    [
      'why the sky is blue',
      'how rainbows form',
      'why we have seasons',
      'how plants make food from sunlight',
      'what causes tides',
      'how vaccines work',
      'why ice floats on water',
      'how a compass works',
      'what gravity is',
      'how the heart pumps blood',
      'why the moon has phases',
      'how airplanes stay in the air',
    ],
  ),
  ...cross(
    ['Tell me three interesting facts about {}.', 'Write a short paragraph about {}.'],
    [
      'octopuses',
      'the planet Mars',
      'honey bees',
      'the Pacific Ocean',
      'volcanoes',
      'the human brain',
      'penguins',
      'the Great Wall of China',
      'elephants',
      'the Sun',
    ],
  ),
  ...cross(
    ['What is the difference between {}?'],
    [
      'weather and climate',
      'a virus and a bacterium',
      'speed and velocity',
      'a lake and a sea',
      'an alligator and a crocodile',
      'a star and a planet',
    ],
  ),
];

export const INSTRUCTIONS: readonly Instruction[] = [
  ...[...WRITING, ...REWRITING].map((prompt) => ({ category: 'writing' as const, prompt })),
  ...ADVICE.map((prompt) => ({ category: 'advice' as const, prompt })),
  ...CODING.map((prompt) => ({ category: 'coding' as const, prompt })),
  ...MATHS.map((prompt) => ({ category: 'maths' as const, prompt })),
  ...FACTS.map((prompt) => ({ category: 'facts' as const, prompt })),
];

export function isHeldOutInstruction(prompt: string): boolean {
  return createHash('sha256').update(prompt).digest()[0] % 8 === 0;
}

/** The prompts of one split, in the fixed order above. */
export function instructionPrompts(split: 'train' | 'heldout'): Instruction[] {
  return INSTRUCTIONS.filter((i) => isHeldOutInstruction(i.prompt) === (split === 'heldout'));
}
