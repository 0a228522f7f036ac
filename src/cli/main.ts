/** Placeholder CLI entry until the CLI lands (issue 5). */
export async function main(_argv: string[]): Promise<number> {
  console.log('fusillade: the CLI is not implemented yet');
  return 1;
}
