import sys, json, re, subprocess
from cli import tree, git
def paths(gd,rev):
    src,funcs,varuse,adds,consts=tree(gd,rev)
    g={}
    for parent,ch,fn in adds:
        node = fn if fn in funcs and funcs[fn]==parent else next((v for v,u in varuse.items() if u==parent),fn)
        g.setdefault(node,[]).extend(c for c in ch if c in funcs or c in varuse)
    out=set(); unresolved=[]
    def walk(node,prefix,depth=0):
        use=funcs.get(node) or varuse.get(node)
        p=(prefix+' '+use).strip()
        if use is None or use.startswith('?'): unresolved.append((node,use)); return
        out.add(p)
        for c in g.get(node,[]):
            if depth<6: walk(c,p,depth+1)
    walk('rootCmd','')
    return out,unresolved
def cobra_version(gd,rev):
    t=git(gd,'show',f'{rev}:cli/go.mod')
    m=re.search(r'github.com/spf13/cobra v(\S+)',t)
    if m: return m.group(1)
    t=git(gd,'show',f'{rev}:cli/Gopkg.lock')
    m=re.search(r'name = "github.com/spf13/cobra"\n(.*?)\n\n',t,re.S)
    return 'dep:'+re.sub(r'\s+',' ',m.group(1))[:80] if m else '?'
if __name__=='__main__':
    res={}
    for line in open('rels.tsv'):
        v,gd,rev=line.split()
        ps,un=paths(gd,rev)
        res[v]={'paths':sorted(ps),'unresolved':un,'cobra':cobra_version(gd,rev)}
    json.dump(res,open('cli.json','w'),indent=0)
    prev=None
    for v,r in res.items():
        key=(tuple(r['paths']),r['cobra'])
        if prev is None or tuple(r['paths'])!=prev[0] or r['cobra']!=prev[1]:
            added=sorted(set(r['paths'])-set(prev[0] if prev else ())); removed=sorted(set(prev[0] if prev else ())-set(r['paths']))
            print(v,len(r['paths']),r['cobra'],'+',added,'-',removed,r['unresolved'][:3])
        prev=key
