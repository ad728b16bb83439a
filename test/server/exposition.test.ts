import { describe, expect, it } from 'vitest';
import { Exposition } from '../../src/server/http/exposition.js';
import { parsePrometheusText, samplesByKey } from '../support/prometheus-text.js';

function build() {
  let gauge = 1;
  const x = new Exposition({ model_name: 'm' });
  x.sampled('gauge', 'g', 'A gauge.', () => gauge);
  const counter = x.counter('c_total', 'A counter.', 'reason', ['stop']);
  const histogram = x.histogram('h_seconds', 'A histogram.', [0.1, 1]);
  return { x, counter, histogram, setGauge: (v: number) => (gauge = v) };
}

const samples = (bytes: Buffer) => samplesByKey(parsePrometheusText(bytes.toString('utf8')));

describe('Exposition: a scrape with nothing changed reuses the previous bytes', () => {
  it('gives the same bytes until a sampled value, a counter or a histogram moves, then renders afresh', () => {
    const { x, counter, histogram, setGauge } = build();
    const first = x.render();
    expect(x.render()).toBe(first);

    setGauge(2);
    const afterGauge = x.render();
    expect(afterGauge).not.toBe(first);
    expect(samples(afterGauge).get('g')).toBe(2);
    expect(x.render()).toBe(afterGauge);

    counter.inc('stop');
    const afterCounter = x.render();
    expect(samples(afterCounter).get(`c_total{reason="stop"}`)).toBe(1);

    histogram.observe(0.5);
    const afterHistogram = x.render();
    expect(samples(afterHistogram).get(`h_seconds_bucket{le="1"}`)).toBe(1);
    expect(samples(afterHistogram).get('h_seconds_count')).toBe(1);

    // A gauge that moves and comes back renders what a fresh render would.
    setGauge(3);
    x.render();
    setGauge(2);
    expect(x.render().toString()).toBe(afterHistogram.toString());
  });
});
