// Character colours: the same list, in the same order, as PALETTE in nodes/convert.py (a test checks it),
// so the legend swatch matches the tint of that character's mask in the overlay image.
export const PALETTE = ["#e6194b", "#3cb44b", "#0082c8", "#f58230", "#911eb4", "#46f0f0", "#f032e6", "#d2f53c"];

export function characterColour(character) {
  return PALETTE[(character - 1) % PALETTE.length];
}
