/**
 * The JSON text of a streamed chunk whose only varying part is one string: everything before it
 * (per choice index) and after it is serialized once, so a token costs one string escape.
 */
export class FrameTemplates {
  private readonly prefixes: string[] = [];

  constructor(
    private readonly prefixOf: (index: number) => string,
    private readonly suffix: string,
  ) {}

  text(index: number, value: string): string {
    const prefix = (this.prefixes[index] ??= this.prefixOf(index));
    return prefix + JSON.stringify(value) + this.suffix;
  }
}
