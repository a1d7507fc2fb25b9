// Faults on the lab's source interface, shared by the tests of both data planes: the
// default route src loses when its interface goes down or away, and the interface
// re-created with the same names and addresses after it was deleted.
import type { Topology } from '../../../agent/lab/topology.js';

export const restoreSourceRoute = (topo: Topology) => topo.exec('src', 'ip', ['route', 'replace', 'default', 'via', topo.v4.peerSrc]);

/** src's veth again (after `ip link del`): same names, addresses, default route. */
export async function recreateSourceInterface(topo: Topology): Promise<void> {
  const { ns, srcIf, peerSrcIf, v4, v6 } = topo;
  await topo.exec('src', 'ip', ['link', 'add', srcIf, 'type', 'veth', 'peer', 'name', peerSrcIf, 'netns', ns.peer]);
  await topo.exec('src', 'ip', ['addr', 'add', `${v4.src}/${v4.prefixLen}`, 'dev', srcIf]);
  await topo.exec('src', 'ip', ['-6', 'addr', 'add', `${v6.src}/${v6.prefixLen}`, 'dev', srcIf, 'nodad']);
  await topo.exec('peer', 'ip', ['addr', 'add', `${v4.peerSrc}/${v4.prefixLen}`, 'dev', peerSrcIf]);
  await topo.exec('peer', 'ip', ['-6', 'addr', 'add', `${v6.peerSrc}/${v6.prefixLen}`, 'dev', peerSrcIf, 'nodad']);
  await topo.exec('peer', 'ip', ['link', 'set', peerSrcIf, 'up']);
  await topo.exec('src', 'ip', ['link', 'set', srcIf, 'up']);
  await restoreSourceRoute(topo);
}
